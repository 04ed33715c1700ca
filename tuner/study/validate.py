"""`tuner study validate`: re-measure every front member on held-out seeds with more images.

A study scores trials on one fixed proxy set, so its front is selected on that set's noise. Validation
builds a new proxy set (default: 4x the study's images, seed = the study's + 1, so no image repeats),
re-measures the baseline on it, then every member of the current front, each with its paired FID interval
and speedup interval (tuner/uncertainty.py). On a user's model the held-out set is the study's prompts
with other seeds, and FID is again against the baseline's own images, now those of the held-out seeds
(its scale: the seed-noise floor of the held-out set), or against the study's `reference_images`. A
member is feasible when the upper bound of its FID increase is within the study's cap. Results go to the
`front_validations` table (validations.py); `tuner export --best` prefers them to the study's own scores. With `--max-fid-increase X` it certifies
for a tighter cap instead: the trials whose point estimate is within X, fastest first, until one's upper
bound is within X on the held-out set.
"""

from __future__ import annotations

import time

import optuna

from tuner.config import AccelConfig
from tuner.errors import TrialFailed, TunerError
from tuner.study.duplicates import config_key
from tuner.study.pareto import baseline_of, completed, front_trials
from tuner.study.spec import METRIC_NAMES, StudySpec
from tuner.study.fid_scale import FidScale, change_of_trial

IMAGES_FACTOR = 4


def held_out_proxy_set(spec: StudySpec, n_images: int | None = None, seed: int | None = None):
    """The validation set: checked before any model is loaded (bad values are one-line errors)."""
    from tuner.evaluate import ProxySet

    from tuner.uncertainty import MIN_IMAGES

    n = IMAGES_FACTOR * spec.proxy_set.n_images if n_images is None else n_images
    s = spec.proxy_set.seed + 1 if seed is None else seed
    if s == spec.proxy_set.seed:
        raise TunerError(f"--seed={s} is the seed the study measured on; validation needs held-out seeds")
    held_out = ProxySet(n, spec.proxy_set.steps, s, spec.proxy_set.prompts)  # a user model: the study's prompts
    if n < MIN_IMAGES:
        raise TunerError(f"--n-images={n}: validation needs at least {MIN_IMAGES} images (its FID interval "
                         "splits them in halves)")
    return held_out


def candidates_for_cap(study: optuna.Study, spec: StudySpec, cap: float) -> list[optuna.trial.FrozenTrial]:
    """Accelerated trials whose study *point estimate* is within `cap` %: the ones that more images could
    certify for that cap (at the study's N their upper bounds are wide). The baseline config is left out."""
    baseline, at = baseline_of(study), spec.objectives.index("fid")

    def point(t):
        return change_of_trial(t.user_attrs, t.values[at], baseline)

    return [t for t in completed(study, feasible_only=False) if t.user_attrs.get("config") and point(t) <= cap]


def distinct_configs(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The first trial of each config (replayed duplicates share their twin's scores)."""
    seen, out = set(), []
    for t in trials:
        key = config_key(t.user_attrs.get("config"))
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def validate_front(study: optuna.Study, spec: StudySpec, proxy_set, pipe=None, progress: bool = False,
                   log=lambda msg: None, only: set[int] | None = None, max_fid_increase: float | None = None) -> dict:
    """Re-measure the front of `study` on `proxy_set` (`only`: just these members, e.g. to split the work
    over processes); returns {baseline, members, ...} (rows as stored). With `max_fid_increase` X: the
    trials that could meet X (`candidates_for_cap`), fastest first, judged at X, until one meets it (the
    pick of `export --best --max-fid-increase X`; the slower ones could not change it)."""
    study_baseline = baseline_of(study)
    if max_fid_increase is None:
        members = front_trials(completed(study, feasible_only=True), spec.maximized, spec, study_baseline)
    else:
        members = distinct_configs(sorted(candidates_for_cap(study, spec, max_fid_increase),
                                          key=lambda t: (t.values[0], t.number)))
    members = [t for t in members if only is None or t.number in only]
    if not members:
        what = "feasible" if max_fid_increase is None else f"accelerated (FID increase <= {max_fid_increase:g}%)"
        raise TunerError(f"study '{spec.name}' has no {what} completed trial to validate")
    t0 = time.perf_counter()
    ctx = held_out_context(spec, proxy_set, pipe, progress)
    log(f"validation baseline: {proxy_set.n_images} images, seed {proxy_set.seed}, {proxy_set.steps} steps")
    baseline = ctx.evaluate_baseline()
    base_fid = float(baseline["fid"])
    cap = spec.constraints.max_fid_increase if max_fid_increase is None else max_fid_increase
    rows = []
    for t in members:
        try:
            config = AccelConfig.from_dict({"schema_version": 1, "methods": t.user_attrs.get("config") or {}})
            r = ctx.evaluate(config)
        except (TrialFailed, TunerError) as e:
            rows.append({**row_head(spec, t, proxy_set, base_fid, cap), "feasible": False, "objectives": {}, "error": str(e)})
            log(f"trial {t.number}: could not be re-measured ({e})")
            continue
        row = measured_row(spec, t, r, study_baseline, proxy_set, base_fid, cap)
        rows.append(row)
        log(f"trial {t.number}: FID {row['objectives']['fid']:.3f} ({row['fid_increase_pct']:+.1f} %, upper "
            f"{row['fid_increase_pct_hi']:+.1f} %), {row['objectives']['speedup']:.2f}x, feasible {row['feasible']}")
        if max_fid_increase is not None and row["feasible"]:
            break
    return {"study": spec.name, "n_images": proxy_set.n_images, "seed": proxy_set.seed, "steps": proxy_set.steps,
            "max_fid_increase": cap, "baseline": {"fid": base_fid, **{k: baseline[k] for k in (
                "seconds_per_image", "real_vs_real_fid", "fid_seed_floor", "clip_score") if k in baseline}},
            "members": rows, "n_feasible": sum(r["feasible"] for r in rows),
            "seconds": time.perf_counter() - t0}


def held_out_context(spec: StudySpec, proxy_set, pipe=None, progress: bool = False):
    """An EvalContext on the held-out proxy set (the model loaded unless given), threads as every command."""
    from tuner.evaluate import EvalContext
    from tuner.threads import set_threads

    set_threads(spec.model.threads, "model.threads")  # the one thread policy, as every model command
    pipe = pipe or spec.model.load()
    ev = spec.evaluator
    return EvalContext(pipe, proxy_set, ev.feature_extractor, ev.inception_weights,
                       latency_images=min(ev.latency_images, proxy_set.n_images), latency_repeats=ev.latency_repeats,
                       progress=progress, reference_images=ev.reference_images, clip_model=ev.clip_model)


def row_head(spec: StudySpec, t: optuna.trial.FrozenTrial, proxy_set, base_fid: float, cap: float | None) -> dict:
    return {"trial_number": t.number, "n_images": proxy_set.n_images, "seed": proxy_set.seed,
            "steps": proxy_set.steps, "baseline_fid": base_fid, "max_fid_increase": cap,
            "study_objectives": {METRIC_NAMES[o]: v for o, v in zip(spec.objectives, t.values)},
            "study_fid_increase_pct": t.user_attrs.get("fid_increase_pct"),
            "study_fid_increase_pct_hi": t.user_attrs.get("fid_increase_pct_hi")}


def measured_row(spec: StudySpec, t, r: dict, study_baseline: dict, proxy_set, base_fid: float, cap) -> dict:
    """A validation row from an evaluation `r` on held-out seeds (fid_delta*, speedup*, ...): the FID change
    on the study's one scale (fid_scale.py), latency on the study's (its stored baseline / this speedup)."""
    scale = FidScale.of(study_baseline)
    objectives = {"latency": float(study_baseline["seconds_per_image"]) / float(r["speedup"]),
                  "fid": scale.objective(r["fid_delta"]), "bitops": float(r["bitops"])}
    objectives = {METRIC_NAMES[o]: float(r[METRIC_NAMES[o]]) if o not in objectives else objectives[o]
                  for o in spec.objectives}  # memory_gb, clip_score: as measured here
    objectives.update({k: float(r[k]) for k in ("speedup", "speedup_lo", "speedup_hi", "class_accuracy",
                                                 "clip_score", "kid", "psnr", "ssim", "macs") if k in r})
    pct = {s: scale.change_pct(float(r[f"fid_delta{s}"])) for s in ("", "_lo", "_hi")}
    return {**row_head(spec, t, proxy_set, base_fid, cap), "objectives": objectives, "fid_increase_pct": pct[""],
            "fid_increase_pct_lo": pct["_lo"], "fid_increase_pct_hi": pct["_hi"],
            "feasible": cap is None or pct["_hi"] <= cap, "error": None}


def run_validation(spec: StudySpec, n_images: int | None = None, seed: int | None = None, pipe=None,
                   progress: bool = False, log=lambda msg: None, max_fid_increase: float | None = None) -> dict:
    """Open the study, validate its front, store the rows. Errors come before any measurement."""
    from tuner.study.runner import open_study
    from tuner.study.validations import write_validations

    proxy_set = held_out_proxy_set(spec, n_images, seed)
    study, storage = open_study(spec, create=False, read_only=False)  # it writes the validations table
    result = validate_front(study, spec, proxy_set, pipe=pipe, progress=progress, log=log,
                            max_fid_increase=max_fid_increase)
    write_validations(storage.engine, spec.name, result["members"])
    return result
