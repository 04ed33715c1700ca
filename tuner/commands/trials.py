"""`tuner study trials STUDY.toml [--csv F | --parquet F]`: every trial as a table (tuner.load_trials)."""

from __future__ import annotations

from tuner.commands.common import check_out_file
from tuner.errors import TunerError

SHOWN = ("trial", "state", "ms/image", "speedup", "FID change %", "FID change % hi", "images", "certified",
         "on front")  # the terminal table; the files hold every column


def register_trials(ssub) -> None:
    p = ssub.add_parser("trials", help="every trial as a table: speedup, FID change %%, certified, config knobs "
                                       "(--csv/--parquet write every column; Python: tuner.load_trials)")
    p.add_argument("study", help="study TOML file")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", default=None, metavar="FILE", help="write every column to a CSV file")
    out.add_argument("--parquet", default=None, metavar="FILE", help="write every column to a Parquet file (needs pyarrow)")
    p.set_defaults(func=study_trials)


def study_trials(args) -> int:
    from tuner.study.spec import load_spec

    spec = load_spec(args.study)
    if args.csv:
        check_out_file(args.csv, "--csv", (".csv",))
    if args.parquet:
        check_out_file(args.parquet, "--parquet", (".parquet",))
        try:
            import pyarrow  # noqa: F401 - pandas writes Parquet through it
        except ImportError:
            raise TunerError("--parquet needs pyarrow (pip install pyarrow); --csv needs nothing more") from None
    from tuner.study.runner import open_study
    from tuner.study.trials import trials_frame

    study, storage = open_study(spec, create=False)
    try:
        frame = trials_frame(study, spec)
    finally:
        storage.engine.dispose()
    target = args.csv or args.parquet
    if target:
        try:
            frame.to_csv(target, index=False) if args.csv else frame.to_parquet(target, index=False)
        except OSError as e:
            raise TunerError(f"{target}: cannot write ({e.strerror or type(e).__name__})") from None
        print(f"{len(frame)} trials, {len(frame.columns)} columns -> {target}")
        return 0
    if not len(frame):
        print(f"study {spec.name}: no trials yet")
        return 0
    print(frame[[c for c in SHOWN if c in frame.columns]].to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.3g}"))
    return 0
