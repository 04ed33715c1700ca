"""`tuner study validate`: re-measure every front member on held-out seeds with more images.

A study scores trials on one fixed image set, so its front is selected on that set's noise. Validation
builds a new image set (default: 4x the study's images, seed = the study's + 1, so no image repeats),
re-measures the baseline on it, then every member of the current front, each with its paired FID interval
and speedup interval (tuner/uncertainty.py). On a user's model the held-out set is the study's prompts
with other seeds, and FID is again against the baseline's own images, now those of the held-out seeds,
or against the study's `reference_images`. The FID change is on the study's one scale (fid_scale.py:
the paired difference in % of the study's stored baseline FID or seed-noise floor). A member is feasible
when the upper bound of its FID change is within the study's cap. Results go to the
`front_validations` table (tuner/storage/validation_table.py); `tuner export --best` prefers them to the study's own scores. With `--max-fid-increase X` it certifies
for a tighter cap instead: the trials whose point estimate is within X, fastest first, until one's upper
bound is within X on the held-out set.
"""

from __future__ import annotations

import time

import optuna

from tuner.config import AccelConfig
from tuner.errors import TrialFailed, TunerError
from tuner.study.held_out import (IMAGES_FACTOR, candidates_for_cap, distinct_configs, held_out_context,  # noqa: F401
                                  held_out_image_set, measured_row, row_head)
from tuner.study.pareto import baseline_of, completed, front_trials
from tuner.study.spec import StudySpec


def validate_front(study: optuna.Study, spec: StudySpec, image_set, pipe=None, progress: bool = False,
                   log=lambda msg: None, only: set[int] | None = None, max_fid_increase: float | None = None) -> dict:
    """Re-measure the front of `study` on `image_set` (`only`: just these members, e.g. to split the work
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
    from tuner.progress import Overall

    t0 = time.perf_counter()
    ctx = held_out_context(spec, image_set, pipe, progress)
    log(f"validation baseline: {image_set.n_images} images, seed {image_set.seed}, {image_set.steps} steps")
    overall = Overall(1 + len(members), "validate", progress, None, unit="config")  # one bar, with an ETA
    baseline = ctx.evaluate_baseline()
    overall.advance("baseline")
    base_fid = float(baseline["fid"])
    cap = spec.constraints.max_fid_increase if max_fid_increase is None else max_fid_increase
    rows = []
    for t in members:
        try:
            config = AccelConfig.from_dict({"schema_version": 1, "methods": t.user_attrs.get("config") or {}})
            r = ctx.evaluate(config)
        except (TrialFailed, TunerError) as e:
            rows.append({**row_head(spec, t, image_set, base_fid, cap), "feasible": False, "objectives": {}, "error": str(e)})
            overall.advance(f"trial {t.number}")
            log(f"trial {t.number}: could not be re-measured ({e}) {overall.status()}")
            continue
        row = measured_row(spec, t, r, study_baseline, image_set, base_fid, cap)
        rows.append(row)
        overall.advance(f"trial {t.number}")
        log(f"trial {t.number}: FID {row['objectives']['fid']:.3f} ({row['fid_increase_pct']:+.1f} %, upper "
            f"{row['fid_increase_pct_hi']:+.1f} %), {row['objectives']['speedup']:.2f}x, feasible {row['feasible']} "
            f"{overall.status()}")
        if max_fid_increase is not None and row["feasible"]:
            break
    overall.close()
    return {"study": spec.name, "n_images": image_set.n_images, "seed": image_set.seed, "steps": image_set.steps,
            "max_fid_increase": cap, "baseline": {"fid": base_fid, **{k: baseline[k] for k in (
                "seconds_per_image", "real_vs_real_fid", "fid_seed_floor", "clip_score") if k in baseline}},
            "members": rows, "n_feasible": sum(r["feasible"] for r in rows),
            "seconds": time.perf_counter() - t0}



def run_validation(spec: StudySpec, n_images: int | None = None, seed: int | None = None, pipe=None,
                   progress: bool = False, log=lambda msg: None, max_fid_increase: float | None = None) -> dict:
    """Open the study, validate its front, store the rows. Errors come before any measurement."""
    from tuner.study.runner import open_study
    from tuner.storage.validation_table import write_validations

    image_set = held_out_image_set(spec, n_images, seed)
    study, storage = open_study(spec, create=False, read_only=False)  # it writes the validations table
    result = validate_front(study, spec, image_set, pipe=pipe, progress=progress, log=log,
                            max_fid_increase=max_fid_increase)
    write_validations(storage.engine, spec.name, result["members"])
    return result
