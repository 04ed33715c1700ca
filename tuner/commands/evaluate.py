"""`tuner baseline` and `tuner evaluate CONFIG.json`."""

from __future__ import annotations

from tuner.commands.common import add_eval_options, make_context, print_result, recorded_image_set
from tuner.progress import bars_enabled


def register(sub) -> None:
    p = sub.add_parser("baseline", help="generate the image set with the un-accelerated model and score it")
    add_eval_options(p)
    p.set_defaults(func=run_baseline)

    p = sub.add_parser("evaluate", help="measure one config JSON against the baseline, in the same run")
    p.add_argument("config", help="config JSON, e.g. from `tuner export` ({\"schema_version\": ..., \"methods\": {...}})")
    add_eval_options(p, set_note=", or the image set an exported config records")
    p.set_defaults(func=run_evaluate)


def run_baseline(args) -> int:
    ctx = make_context(args, progress=not args.json and bars_enabled())
    print_result(ctx.evaluate_baseline(), args.json)
    return 0


def run_evaluate(args) -> int:
    from tuner.apply_config import apply
    from tuner.config import AccelConfig

    config = AccelConfig.load(args.config)  # validated before any model is loaded
    # An exported config is re-measured on the study's own image set (steps, size, seeds) and FID feature
    # space unless overridden: its timesteps, checkpoints and objectives only mean something there.
    env = config.environment or {}
    ctx = make_context(args, progress=not args.json and bars_enabled(), recorded=recorded_image_set(env),
                       recorded_extractor=env.get("feature_extractor"), config=config)
    if "quant" in config.methods and ctx.kind != "proxy":  # a user model's default calibration, as in its study
        from tuner.methods.quant import CALIBRATIONS, calibrate

        if ctx.pipe.unet not in CALIBRATIONS:
            calibrate(ctx.pipe)
    apply(ctx.target, config).remove()  # a config this model cannot take fails now, not after the baseline
    result = ctx.evaluate(config)
    base = ctx.quality(ctx.baseline_images)
    if ctx.reference is None:  # FID against the baseline's own images: its scale is the seed-noise floor
        base["fid"] = ctx.seed_floor_fid
    result["baseline"] = {k: v for k, v in base.items() if k in ("fid", "kid", "class_accuracy", "clip_score")}
    result["model_id"] = ctx.pipe.model_id
    result["fid_reference"] = ctx.fid_reference
    result["config"] = config.to_dict()["methods"]
    print_result(result, args.json)
    return 0
