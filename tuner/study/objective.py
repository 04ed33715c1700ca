"""One trial: suggest -> config -> the race over image rungs (race.py) -> latency -> record.

Objectives (minimized, except the CLIP score):
- latency: seconds per image, as the study's stored baseline latency divided by the speedup this trial
  measured with the candidate and the baseline timed interleaved. The ratio is robust to the machine's
  load changing between trials; the raw seconds are kept as user attributes.
- fid: the study's one FID scale (fid_scale.py): the baseline's FID plus the paired FID difference at the
  images the race reached (`n_images`; the raw FID there is `fid_at_n`). At the study's own image set this
  is the candidate's proxy FID.
- bitops (optional): BitOPs per image (MACs x weight bits x activation bits, summed per layer).
- memory (optional, CUDA): peak GPU memory of the candidate's generation, GB (`memory_gb`); also a
  constraint with `[constraints] max_memory_gb`.
- clip_score (optional, user models with `[evaluator] clip_model`): CLIP score of the images against their
  prompts, maximized; `clip_score_change_pct` is its change from the baseline's, in percent.

Constraint (with `[constraints] max_fid_increase = X`): `fid_increase_pct` = U - X, feasible when <= 0,
set with Optuna 5's `trial.set_constraint`. U is the upper bound of the FID change (`fid_increase_pct_hi`;
paired seed splits, one-sided 95 %), not the point estimate (`fid_increase_pct`): a trial counts as
feasible only when the noise of its N images cannot explain it away. The speedup's interval over timing
rounds is stored too (`speedup_lo`, `speedup_hi`).

The race: Optuna cannot prune multi-objective trials by intermediate values, so the trial itself runs
its rungs (race.py) and stores them (`race`: [n, change, lo, hi] per rung, `race_decision`, `race_reason`).
A trial whose first rung is already infeasible is pruned with its reason (`prune_reason`, the cheap
reject of earlier rounds); the others complete with the scores of their last rung.
"""

from __future__ import annotations

import math
import time

import optuna
from optuna.trial import TrialState

from tuner.errors import TrialFailed, TunerError
from tuner.study.context import StudyContext

from tuner.study import race
from tuner.study.duplicates import measured_twin, queue_neighbour, replay
from tuner.study.fid_scale import FidScale
from tuner.study.noise_front import noise_front
from tuner.uncertainty import speedup_interval

FID_CONSTRAINT = "fid_increase_pct"
MEMORY_CONSTRAINT = "memory_gb_excess"


def _jsonable(v):
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "item"):  # numpy / torch scalars
        return _jsonable(v.item())
    return str(v)


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, MemoryError) or "out of memory" in str(e).lower()


class TrialObjective:
    def __init__(self, context: StudyContext, spec=None):
        self.ctx = context
        self.spec = spec or context.spec  # the run's spec (same evaluation settings as the context's)
        self.eval_seconds = 0.0  # time spent generating/scoring images in this process (for overhead)

    # --- constraint ---------------------------------------------------------------------------------
    def fid_excess(self, fid_ratio: float) -> float | None:
        x = self.spec.constraints.max_fid_increase
        return None if x is None else 100.0 * (fid_ratio - 1.0) - x

    def _evaluate(self, config, **kwargs) -> dict:
        t = time.perf_counter()
        try:
            return self.ctx.eval.evaluate(config, **kwargs)
        except TunerError as e:  # a combination the methods refuse (e.g. a layer they cannot patch)
            raise TrialFailed(f"config rejected: {e}") from None
        except (RuntimeError, MemoryError) as e:
            if _is_oom(e):
                raise TrialFailed("out of memory") from None
            raise
        finally:
            self.eval_seconds += time.perf_counter() - t

    # --- one trial ----------------------------------------------------------------------------------
    def __call__(self, trial: optuna.Trial) -> list[float]:
        values = self.ctx.space.suggest(trial)
        try:
            config = self.ctx.space.to_config(values)
        except TunerError as e:
            raise TrialFailed(f"config rejected: {e}") from None
        methods = config.to_dict()["methods"]
        trial.set_user_attr("config", methods)
        twin = measured_twin(trial, methods)
        if twin is not None:  # measured already: replay it instead of spending a full evaluation,
            queue_neighbour(trial, self.ctx.space, values)  # and look next to it with the next trial
            return replay(trial, twin)
        pairing = solver_pairing(methods, self.ctx.baseline)
        if pairing:
            trial.set_user_attr("noise_pairing", pairing)
        result = self._race(trial, config)
        base = self.ctx.baseline
        latency = float(base["seconds_per_image"]) / float(result["speedup"])
        fid = FidScale.of(base).objective(result["fid_delta"])  # the study's one scale (fid_scale.py)
        result["seconds_per_image_raw"] = result.pop("seconds_per_image")
        result["seconds_per_image"] = latency
        result["fid_at_n"] = result.pop("fid")  # the raw FID at the images the race reached
        result["fid"] = fid
        result["fid_ratio"] = 1.0 + result["fid_increase_pct"] / 100.0
        for key, value in sorted(result.items()):
            trial.set_user_attr(key, _jsonable(value))
        trial.set_user_attr("stage", "full")
        excess = self.fid_excess(1.0 + result["fid_increase_pct_hi"] / 100.0)  # the upper bound, not the point
        if excess is not None:
            trial.set_constraint(FID_CONSTRAINT, excess)
        max_memory = self.spec.constraints.max_memory_gb
        if max_memory is not None:
            if result.get("memory_gb") is None:
                raise TrialFailed("constraints.max_memory_gb: peak memory was not measured (CUDA only)")
            trial.set_constraint(MEMORY_CONSTRAINT, float(result["memory_gb"]) - max_memory)
        if "clip_score" in result and isinstance(base.get("clip_score"), (int, float)) and base["clip_score"] > 0:
            trial.set_user_attr("clip_score_change_pct", 100.0 * (float(result["clip_score"]) / base["clip_score"] - 1.0))
        objectives = {"latency": latency, "fid": fid, "bitops": float(result["bitops"]),
                      "memory": float(result.get("memory_gb", float("nan"))),
                      "clip_score": float(result.get("clip_score", float("nan")))}
        return [objectives[o] for o in self.spec.objectives]

    def _race(self, trial: optuna.Trial, config) -> dict:
        """Rung after rung (race.py) until the interval decides; latency once the first rung is passed.
        Returns the last rung's scores with the speedup; prunes a trial infeasible on its first rung."""
        cap = self.spec.constraints.max_fid_increase
        rungs = self.spec.evaluator.rungs(self.spec.image_set.n_images, cap is not None)
        scale = FidScale.of(self.ctx.baseline)
        images = cost = latency = None
        history = []
        for i, n in enumerate(rungs):
            t = time.perf_counter()
            try:
                images, cost, info = race.grow_candidate(self.ctx.eval, config, images, n, cost)
                row = race.score(self.ctx.eval, images, scale)
            except TunerError as e:
                raise TrialFailed(f"config rejected: {e}") from None
            finally:
                self.eval_seconds += time.perf_counter() - t
            history.append([n, row["fid_increase_pct"], row["fid_increase_pct_lo"], row["fid_increase_pct_hi"]])
            trial.set_user_attr("race", history)
            decision = race.decide(row["fid_increase_pct_lo"], row["fid_increase_pct_hi"], cap, n, i == len(rungs) - 1,
                                   row["fid_increase_pct"])
            if decision == "infeasible" and i == 0 and len(rungs) > 1:
                self._reject(trial, row, cost, cap)
            if latency is None:
                latency = self._latency(config)
            dominated = None
            if decision == "straddles":
                dominated = self._dominated_by(trial, row, latency)
                decision = "dominated" if dominated is not None else decision
            if decision != "straddles":
                trial.set_user_attr("race_decision", decision)
                trial.set_user_attr("race_reason", race.reason(decision, row, cap, dominated))
                break
        return {**row, **cost, **{k: v for k, v in info.items() if k != "layer_bits"}, **latency}

    def _latency(self, config) -> dict:
        t = time.perf_counter()
        try:
            ev = self.ctx.eval
            lat = ev.latency(config)
        finally:
            self.eval_seconds += time.perf_counter() - t
        out = {"seconds_per_image": lat["candidate"], "baseline_seconds_per_image": lat["baseline"],
               "speedup": lat["baseline"] / lat["candidate"]}
        out.update(speedup_interval(ev.last_latency_rounds["baseline"], ev.last_latency_rounds["candidate"]))
        memory = getattr(ev, "last_latency_memory", {}).get("candidate")
        if memory is not None:  # peak over the timed generations (replaces the counted run's)
            out["memory_gb"] = memory
        return out

    def _dominated_by(self, trial: optuna.Trial, row: dict, latency: dict) -> int | None:
        """A decided-feasible trial that dominates this one beyond the noise, whatever more images show."""
        base = self.ctx.baseline
        if self.spec.objectives != ["latency", "fid"]:
            return None  # other objectives are not known before the trial ends
        scale, s = FidScale.of(base), latency["speedup"]
        lat = float(base["seconds_per_image"]) / s
        e_lat = max(lat * (s / latency["speedup_lo"] - 1.0), lat * (1.0 - s / latency["speedup_hi"]), 0.0)
        e_fid = scale.scale * max(row["fid_increase_pct_hi"] - row["fid_increase_pct"],
                                  row["fid_increase_pct"] - row["fid_increase_pct_lo"]) / 100.0
        decided = [t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                   if t.user_attrs.get("race_decision") == "feasible" and all(v <= 0 for v in t.constraints.values())]
        point = [lat, scale.objective(row["fid_delta"])]  # the front's own rule (noise_front.py) on this rung
        found = noise_front(decided, self.spec.objectives, self.spec.maximized, base, candidate=(point, [e_lat, e_fid]))
        return found[0].number if found else None

    def _reject(self, trial: optuna.Trial, row: dict, cost: dict, cap: float) -> None:
        """The first rung says infeasible: prune with the reason (the cheap reject of earlier rounds)."""
        reason = f"cheap reject: {race.reason('infeasible', row, cap)}"
        for key in ("fid", "kid", "class_accuracy", "psnr", "ssim"):
            if key in row:
                trial.set_user_attr(f"subset_{key}", _jsonable(row[key]))
        for key in ("macs", "bitops"):
            trial.set_user_attr(f"subset_{key}", _jsonable(cost[key]))
        for key in ("fid_increase_pct", "fid_increase_pct_lo", "fid_increase_pct_hi", "n_images"):
            trial.set_user_attr(key, _jsonable(row[key]))
        trial.set_user_attr("stage", "cheap_reject")
        trial.set_user_attr("race_decision", "infeasible")
        trial.set_user_attr("prune_reason", reason)
        trial.set_constraint(FID_CONSTRAINT, row["fid_increase_pct_hi"] - cap)
        raise optuna.TrialPruned(reason)


STOCHASTIC_SOLVERS = ("ddpm",)


def solver_pairing(methods: dict, baseline: dict) -> str | None:
    """How a stochastic solver's noise relates to the baseline's (None for deterministic solvers).
    Per-step noise comes from each image's own generator (tuner.solvers.per_image_noise), so a stochastic
    candidate is paired with a stochastic baseline of the same seeds; against a deterministic baseline
    (DDIM, DPM-Solver++) its trajectories decorrelate and the paired interval stays wide: the race and
    certification then simply spend the images it takes."""
    solver = (methods.get("solver") or {}).get("name") or (methods.get("solver") or {}).get("solver")
    if solver not in STOCHASTIC_SOLVERS:
        return None
    base = str(baseline.get("solver") or "its deterministic solver")  # the study's baseline, whichever it is
    if base.split("-")[0] in STOCHASTIC_SOLVERS:
        return "paired: per-step noise from the per-image generators the stochastic baseline uses too"
    return (f"unpaired: stochastic solver {solver} against a deterministic baseline ({base}); its FID "
            "interval narrows only with more images")
