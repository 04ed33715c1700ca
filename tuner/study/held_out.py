"""Held-out re-measurement, shared by `tuner study validate` (validate.py) and the certification at the
end of `tuner study run` (certify.py): the held-out image set (the study's seed + 1, so no image of the
search repeats), its ScoringContext, which trials could meet a cap, and a validation row on the study's one
FID scale (fid_scale.py).
"""

from __future__ import annotations

import optuna

from tuner.errors import TunerError
from tuner.study.duplicates import config_key
from tuner.study.fid_scale import FidScale, change_of_trial
from tuner.study.pareto import baseline_of, completed
from tuner.study.spec import METRIC_NAMES, StudySpec

IMAGES_FACTOR = 4


def held_out_image_set(spec: StudySpec, n_images: int | None = None, seed: int | None = None):
    """The validation set: checked before any model is loaded (bad values are one-line errors)."""
    from tuner.scoring import ImageSet

    from tuner.uncertainty import MIN_IMAGES

    n = IMAGES_FACTOR * spec.image_set.n_images if n_images is None else n_images
    s = spec.image_set.seed + 1 if seed is None else seed
    if s == spec.image_set.seed:
        raise TunerError(f"--seed={s} is the seed the study measured on; validation needs held-out seeds")
    held_out = ImageSet(n, spec.image_set.steps, s, spec.image_set.prompts)  # a user model: the study's prompts
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


def held_out_context(spec: StudySpec, image_set, pipe=None, progress: bool = False):
    """An ScoringContext on the held-out image set (the model loaded unless given), threads as every command."""
    from tuner.scoring import ScoringContext
    from tuner.threads import set_threads

    set_threads(spec.model.threads, "model.threads")  # the one thread policy, as every model command
    pipe = pipe or spec.model.load()
    ev = spec.evaluator
    return ScoringContext(pipe, image_set, ev.feature_extractor, ev.inception_weights,
                       latency_images=min(ev.latency_images, image_set.n_images), latency_repeats=ev.latency_repeats,
                       progress=progress, reference_images=ev.reference_images, clip_model=ev.clip_model)


def row_head(spec: StudySpec, t: optuna.trial.FrozenTrial, image_set, base_fid: float, cap: float | None) -> dict:
    return {"trial_number": t.number, "n_images": image_set.n_images, "seed": image_set.seed,
            "steps": image_set.steps, "baseline_fid": base_fid, "max_fid_increase": cap,
            "study_objectives": {METRIC_NAMES[o]: v for o, v in zip(spec.objectives, t.values)},
            "study_fid_increase_pct": t.user_attrs.get("fid_increase_pct"),
            "study_fid_increase_pct_hi": t.user_attrs.get("fid_increase_pct_hi")}


def measured_row(spec: StudySpec, t, r: dict, study_baseline: dict, image_set, base_fid: float, cap) -> dict:
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
    return {**row_head(spec, t, image_set, base_fid, cap), "objectives": objectives, "fid_increase_pct": pct[""],
            "fid_increase_pct_lo": pct["_lo"], "fid_increase_pct_hi": pct["_hi"],
            "feasible": cap is None or pct["_hi"] <= cap, "error": None}
