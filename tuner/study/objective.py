"""One trial: suggest -> config -> cheap reject on a subset -> full evaluation -> record.

Objectives (minimized, except the CLIP score):
- latency: seconds per image, as the study's stored baseline latency divided by the speedup this trial
  measured with the candidate and the baseline timed interleaved. The ratio is robust to the machine's
  load changing between trials; the raw seconds are kept as user attributes.
- fid: proxy FID on the full proxy set.
- bitops (optional): BitOPs per image (MACs x weight bits x activation bits, summed per layer).
- memory (optional, CUDA): peak GPU memory of the candidate's generation, GB (`memory_gb`); also a
  constraint with `[constraints] max_memory_gb`.
- clip_score (optional, user models with `[evaluator] clip_model`): CLIP score of the images against their
  prompts, maximized; `clip_score_change_pct` is its change from the baseline's, in percent.

Constraint (with `[constraints] max_fid_increase = X`): `fid_increase_pct` = U - X, feasible when <= 0,
set with Optuna 5's `trial.set_constraint`. U is the upper bound of the FID increase in percent of the
baseline's FID (paired seed splits, one-sided 95 %, user attribute `fid_increase_pct_hi`), not
the point estimate (`fid_increase_pct`): a trial counts as feasible only when the noise of N images cannot
explain it away. The speedup's interval over timing rounds is stored too (`speedup_lo`, `speedup_hi`).

Cheap reject: Optuna cannot prune multi-objective trials by intermediate values, so the candidate is
first scored on `cheap_reject_images` images; when its FID ratio to the baseline's on the same subset
exceeds `margin` x the allowed ratio, it is clearly infeasible: the constraint is set from the subset
estimate and the trial is pruned with its reason (user attribute `prune_reason`). FID's small-sample bias
adds about the same amount to candidate and baseline (FID_N ~ FID + c/N), so the subset ratio is pulled
towards 1 and under-states the full-set ratio: margin 1 is already conservative (measured in the default
study: subset ratios 1.01/1.08/1.62 for full-set ratios 1.91/2.30/5.05).
"""

from __future__ import annotations

import math
import time

import optuna

from tuner.errors import TrialFailed, TunerError
from tuner.study.context import StudyContext
from tuner.study.duplicates import measured_twin, queue_neighbour, replay
from tuner.uncertainty import increase_pct

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
        self._cheap_reject(trial, config)

        result = self._evaluate(config)
        base = self.ctx.baseline
        latency = float(base["seconds_per_image"]) / float(result["speedup"])
        fid = float(result["fid"])
        result["seconds_per_image_raw"] = result.pop("seconds_per_image")
        result["seconds_per_image"] = latency
        result["fid_ratio"] = fid / float(base["fid"])
        for suffix in ("", "_lo", "_hi"):  # interval of the change (tuner/uncertainty.py); < 4 images: the point
            delta = result.get(f"fid_delta{suffix}", fid - float(base["fid"]))
            result[f"fid_increase_pct{suffix}"] = increase_pct(delta, float(base["fid"]))
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

    def _cheap_reject(self, trial: optuna.Trial, config) -> None:
        ev = self.spec.evaluator
        if self.ctx.subset_baseline_fid is None:
            return
        subset = self.ctx.eval.proxy_set.subset(ev.cheap_reject_images)
        quick = self._evaluate(config, proxy_set=subset, with_latency=False)
        ratio = float(quick["fid"]) / self.ctx.subset_baseline_fid
        trial.set_user_attr("cheap_fid_ratio", ratio)
        allowed = 1.0 + self.spec.constraints.max_fid_increase / 100.0
        if ratio > ev.cheap_reject_margin * allowed:
            reason = (f"cheap reject: FID ratio {ratio:.2f} on {subset.n_images} images > "
                      f"{ev.cheap_reject_margin:g} x allowed {allowed:.2f}")
            for key in ("fid", "kid", "class_accuracy", "psnr", "ssim", "macs", "bitops"):
                if key in quick:
                    trial.set_user_attr(f"subset_{key}", _jsonable(quick[key]))
            trial.set_user_attr("stage", "cheap_reject")
            trial.set_user_attr("prune_reason", reason)
            trial.set_constraint(FID_CONSTRAINT, self.fid_excess(ratio))
            raise optuna.TrialPruned(reason)
