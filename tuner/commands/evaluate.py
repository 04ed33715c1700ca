"""`tuner baseline` and `tuner evaluate CONFIG.json`."""

from __future__ import annotations

import sys

from tuner.commands.common import add_eval_options, make_context, print_result


def register(sub) -> None:
    p = sub.add_parser("baseline", help="generate the proxy set with the un-accelerated model and score it")
    add_eval_options(p)
    p.set_defaults(func=run_baseline)

    p = sub.add_parser("evaluate", help="measure one config JSON against the baseline, in the same run")
    p.add_argument("config", help="config JSON ({'schema_version': 1, 'methods': {...}})")
    add_eval_options(p, set_note=", or the proxy set an exported config records")
    p.set_defaults(func=run_evaluate)


def run_baseline(args) -> int:
    ctx = make_context(args, progress=not args.json and sys.stderr.isatty())
    print_result(ctx.evaluate_baseline(), args.json)
    return 0


def run_evaluate(args) -> int:
    from tuner.apply_config import apply
    from tuner.config import AccelConfig

    config = AccelConfig.load(args.config)  # validated before any model is loaded
    # An exported config is re-measured on the study's own proxy set (steps, size, seeds) and FID feature
    # space unless overridden: its timesteps, checkpoints and objectives only mean something there.
    env = config.environment or {}
    ctx = make_context(args, progress=not args.json and sys.stderr.isatty(), recorded=env.get("proxy_set"),
                       recorded_extractor=env.get("feature_extractor"))
    apply(ctx.pipe, config).remove()  # a config this model cannot take fails now, not after the baseline
    result = ctx.evaluate(config)
    result["baseline"] = {k: v for k, v in ctx.quality(ctx.baseline_images).items() if k in ("fid", "kid", "class_accuracy")}
    result["config"] = config.to_dict()["methods"]
    print_result(result, args.json)
    return 0
