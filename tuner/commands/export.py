"""`tuner export`: one trial's config (or the best under a FID cap) as the JSON `tuner evaluate` reads.

Validates its input first (one-line error, exit 2, nothing written)."""

from __future__ import annotations

from tuner.commands.common import check_out_file
from tuner.errors import TunerError


def register(sub) -> None:
    p = sub.add_parser("export", help="write one trial's config (or the best under a FID cap) as JSON")
    p.add_argument("study", help="study TOML file")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, default=None, metavar="N", help="the trial with this number")
    which.add_argument("--best", action="store_true", help="the fastest trial within the FID cap")
    p.add_argument("--max-fid-increase", type=float, default=None, metavar="PCT",
                   help="with --best: FID at most this many percent over the baseline (default: the study's constraint)")
    p.add_argument("-o", "--out", required=True, metavar="FILE.json", help="output config JSON file")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from tuner.study.export import export
    from tuner.study.spec import load_spec
    from tuner.study.runner import open_study

    if args.max_fid_increase is not None and not args.best:
        raise TunerError("--max-fid-increase goes with --best")
    from tuner.storage.validation_table import latest_validations

    spec = load_spec(args.study)
    check_out_file(args.out, "-o", (".json",))
    study, storage = open_study(spec, create=False)
    validated = latest_validations(storage.engine, spec.name)  # held-out scores win over the study's
    try:
        config, trial = export(study, spec, args.out, args.trial, args.max_fid_increase, validated)
    except OSError as e:  # checked above; a disk that fills up in between still gets one line
        raise TunerError(f"-o {args.out}: cannot write ({e.strerror or type(e).__name__})") from None
    print(f"{chosen_line(trial.number, config.objectives)} -> {args.out}")
    return 0


def chosen_line(number: int, o: dict) -> str:
    """What export chose on: the held-out (validated) numbers when the trial has them, which is what
    --best ranks by; else the study's own."""
    num = lambda k: isinstance(o.get(k), (int, float))  # noqa: E731
    if num("validated_fid_increase_pct"):
        ms = o.get("validated_seconds_per_image", o["seconds_per_image"]) * 1000
        speedup = f", {o['validated_speedup']:.2f}x" if num("validated_speedup") else ""
        upper = f" (upper {o['validated_fid_increase_pct_hi']:+.1f} %)" if num("validated_fid_increase_pct_hi") else ""
        n = f" at {int(o['validated_n_images'])} held-out images" if num("validated_n_images") else " on held-out seeds"
        return (f"trial #{number}: {ms:.2f} ms/image{speedup}, FID change {o['validated_fid_increase_pct']:+.1f} %"
                f"{upper}{n} (validated: what it was chosen on)")
    speedup = f", {o['speedup']:.2f}x" if num("speedup") else ""
    return f"trial #{number}: {o['seconds_per_image'] * 1000:.2f} ms/image{speedup}, FID {o['fid']:.3f}"
