"""`tuner study report`: read the study, generate the gallery with each front member's config, render."""

from __future__ import annotations

from typing import Callable

from tuner.study.spec import StudySpec


def build_report(spec: StudySpec, study_arg: str, n_images: int, bar: bool, log: Callable[[str], None],
                 pipe=None) -> dict:
    """The page's HTML and what it shows. `pipe` overrides the study's model (tests)."""
    from tuner.progress import Overall
    from tuner.report import page, study_data
    from tuner.report.gallery import make_gallery
    from tuner.storage.keys import MODEL_ATTR
    from tuner.study import pareto
    from tuner.study.context import image_set_of
    from tuner.study.export import trial_config
    from tuner.study.runner import open_study

    study, storage = open_study(spec, create=False)
    try:
        front = pareto.front(study, spec)  # no stored baseline: one line, before the model loads
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        configs = {m["trial"]: trial_config(study, spec, by_number[m["trial"]]) for m in front["members"]}
        history = study_data.hypervolume_history(study, spec)
        importances, why_not = study_data.importances(study, spec)
        model_id = study.user_attrs.get(MODEL_ATTR) or spec.model.id
        if pipe is None:
            log(f"report: loading model {spec.model.id}")
            pipe = spec.model.load()
        if any("quant" in c.methods for c in configs.values()) and getattr(pipe, "kind", "proxy") != "proxy":
            # a user model's default calibration, as its study and `tuner evaluate` use
            from tuner.methods.quant import CALIBRATIONS, calibrate

            if pipe.unet not in CALIBRATIONS:
                calibrate(pipe)
        ps = image_set_of(spec, max(2, n_images))
        conditions, seeds = ps.conditions[:n_images], ps.seeds[:n_images]
        with Overall(1 + len(configs), "report: images", bar, log, unit="config") as progress:
            gallery = make_gallery(pipe, configs, conditions, seeds, spec.image_set.steps,
                                   on_row=lambda key, row: progress.advance(
                                       "baseline" if key == "baseline" else f"trial {key}"))
        text = page.render(spec, study, front, gallery, study_arg, model_id, history, importances, why_not)
    finally:
        storage.engine.dispose()
    return {"html": text, "members": [m["trial"] for m in front["members"]], "n_images": n_images}
