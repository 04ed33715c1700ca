"""Certification at the end of `tuner study run`: the study's answer, re-proved on held-out seeds.

Which trials: the accelerated trials whose point estimate of the FID change is within the study's cap
X (`validate.candidates_for_cap`, one per config), reduced to the noise-aware front among them
(noise_front.py), fastest first; when none of those certifies, the front of the candidates behind them
comes forward, until one certifies (a fast member that fails must not hide a slower one that holds). Each runs the race of race.py on the held-out seeds of
`tuner study validate` (the study's seed + 1: image i has seed (seed + 1) * 1_000_003 + i, disjoint from
every search image while i < 1_000_003) over `[evaluator] certify_rungs` (default 4 x n_images), the
baseline's held-out images made once and extended, the candidate's kept from rung to rung, until its
interval decides: certified feasible (upper bound <= X), certified infeasible (lower bound > X), or
undecided at the last rung. `certify_budget_images` (images generated in all, baseline included) bounds
the work; what it could not reach is reported as such.

Results: rows of the `front_validations` table (validations.py; what `tuner export --best` reads, as
after `tuner study validate`), and the study user attribute `certification` (what `tuner study pareto`
prints per front member and the run's summary reports).
"""

from __future__ import annotations

import time

import optuna

from tuner.config import AccelConfig
from tuner.errors import TrialFailed, TunerError
from tuner.study import race
from tuner.study.fid_scale import FidScale
from tuner.study.pareto import CERTIFICATION_ATTR, baseline_of, front_trials
from tuner.study.spec import StudySpec
from tuner.study.held_out import candidates_for_cap, distinct_configs, held_out_context, held_out_image_set, measured_row

DECIDED = ("feasible", "infeasible")


def certification_candidates(study: optuna.Study, spec: StudySpec, cap: float, exclude=frozenset()) -> list:
    """Front candidates for the cap, fastest first (see the module docstring); trials in `exclude`
    (raced already) leave the pool, so the front behind them comes forward."""
    pool = distinct_configs(sorted(candidates_for_cap(study, spec, cap), key=lambda t: (t.values[0], t.number)))
    pool = [t for t in pool if t.number not in exclude]
    return front_trials(pool, spec.maximized, spec, baseline_of(study))


def _decided(state: dict) -> set[int]:
    """Trials an earlier run decided (a re-run resumes the undecided and the unreached ones)."""
    return {int(n) for n, v in state["trials"].items() if v.get("status") in DECIDED}


def _certified_any(state: dict) -> bool:
    return any(v.get("status") == "feasible" for v in state["trials"].values())


def seed_sets(spec: StudySpec) -> tuple[set[int], set[int]]:
    """(every seed the search may use: its largest rung or image set, the seeds certification uses)."""
    from tuner.scoring import ImageSet

    ps = spec.image_set
    n = max(ps.n_images, *(spec.evaluator.race_rungs or (0,)))
    rungs, _ = spec.evaluator.certification(ps.n_images)
    return set(ImageSet(n, ps.steps, ps.seed, ps.prompts).seeds), set(held_out_image_set(spec, rungs[-1]).seeds)


def certify(study: optuna.Study, spec: StudySpec, engine, pipe=None, log=print) -> dict | None:
    """Certify the front candidates (module docstring); None when the study has no cap or no budget."""
    cap = spec.constraints.max_fid_increase
    rungs, budget = spec.evaluator.certification(spec.image_set.n_images)
    if cap is None or budget <= 0:
        return None
    previous = study.user_attrs.get(CERTIFICATION_ATTR) or {}
    done = previous.get("trials", {}) if previous.get("cap") == cap and previous.get("rungs") == list(rungs) else {}
    state = {"cap": cap, "rungs": list(rungs), "budget_images": budget, "spent_images": 0, "trials": dict(done),
             "seed": spec.image_set.seed + 1, "seconds": 0.0}
    t0 = time.perf_counter()
    _race_all(study, spec, engine, rungs, state, pipe, log)
    state["seconds"] = time.perf_counter() - t0
    state["exhausted"] = any(v.get("status") == "not reached" for v in state["trials"].values())
    study.set_user_attr(CERTIFICATION_ATTR, state)
    n_ok = sum(v.get("status") == "feasible" for v in state["trials"].values())
    log(f"certification: {n_ok} of {len(state['trials'])} candidates certified at +{cap:g} % on held-out seed "
        f"{state['seed']}, {state['spent_images']} of {budget} images" + (", budget exhausted" if state["exhausted"] else ""))
    return state


def _race_all(study, spec, engine, rungs, state, pipe, log) -> None:
    """Race the front candidates; when none of them certifies, the front of the candidates behind them,
    and so on (a faster member that fails must not hide a slower one that holds), until one certifies,
    none is left, or the budget runs out."""
    cap, ctx, base, raced = spec.constraints.max_fid_increase, None, None, _decided(state)
    while not _certified_any(state):
        todo = certification_candidates(study, spec, cap, exclude=raced)
        if not todo:
            return
        if ctx is None:
            ctx = held_out_context(spec, held_out_image_set(spec, rungs[0]), pipe)
            base = ctx.evaluate_baseline()  # rung 0 of the held-out baseline (and its latency, a user model's floor)
            state["spent_images"] += rungs[0]
        raced |= {t.number for t in todo}
        if not _race_batch(study, spec, engine, ctx, base, todo, rungs, state, log):
            return


def _race_batch(study, spec, engine, ctx, base, todo, rungs, state, log) -> bool:
    """Race `todo` in order; False once the budget stopped one (nothing more can be raced)."""
    from tuner.storage.validation_table import write_validations

    for t in todo:
        try:
            row, status, why = _race_one(study, spec, ctx, t, rungs, state, float(base["fid"]))
        except (TrialFailed, TunerError) as e:
            row, status, why = None, "failed", f"could not be re-measured ({e})"
        state["trials"][str(t.number)] = {"status": status, "reason": why, **_summary(row)}
        log(f"certification: trial {t.number} {status}: {why}")
        if row is not None and status != "not reached":
            write_validations(engine, spec.name, [row])
        if status == "not reached":
            return False
    return True


def _summary(row: dict | None) -> dict:
    if row is None:
        return {}
    o = row["objectives"]
    return {"n_images": row["n_images"], "fid_increase_pct": row["fid_increase_pct"],
            "fid_increase_pct_lo": row["fid_increase_pct_lo"], "fid_increase_pct_hi": row["fid_increase_pct_hi"],
            "speedup": o.get("speedup"), "speedup_lo": o.get("speedup_lo")}


def _race_one(study, spec, ctx, t, rungs, state, base_fid) -> tuple[dict | None, str, str]:
    """One candidate through the held-out rungs; (row at its last rung, status, one-line reason)."""
    cap, scale = spec.constraints.max_fid_increase, FidScale.of(baseline_of(study))
    config = AccelConfig.from_dict({"schema_version": 1, "methods": t.user_attrs.get("config") or {}})
    images = cost = row = None
    latency = None
    for i, n in enumerate(rungs):
        need = n - (0 if images is None else len(images)) + max(0, n - len(ctx.baseline_images))
        if state["spent_images"] + need > state["budget_images"]:
            why = f"certification budget of {state['budget_images']} images exhausted before {n} images"
            return row, ("not reached" if row is None else "undecided"), why
        state["spent_images"] += need
        images, cost, info = race.grow_candidate(ctx, config, images, n, cost)
        r = {**race.score(ctx, images, scale), **cost, **{k: v for k, v in info.items() if k != "layer_bits"}}
        if latency is None:
            latency = _latency(ctx, config)
        r.update(latency)
        held = race.sized(ctx.image_set, n)
        row = measured_row(spec, t, r, baseline_of(study), held, base_fid, cap)
        decision = race.decide(row["fid_increase_pct_lo"], row["fid_increase_pct_hi"], cap, n, i == len(rungs) - 1,
                               row["fid_increase_pct"])
        if decision != "straddles":
            return row, decision, race.reason(decision, r, cap)
    return row, "undecided", race.reason("undecided", r, cap)


def _latency(ctx, config) -> dict:
    from tuner.uncertainty import speedup_interval

    lat = ctx.latency(config)
    out = {"speedup": lat["baseline"] / lat["candidate"]}
    out.update(speedup_interval(ctx.last_latency_rounds["baseline"], ctx.last_latency_rounds["candidate"]))
    return out
