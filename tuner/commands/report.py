"""`tuner study report STUDY.toml -o report.html`: one self-contained HTML page (works offline) with the
interactive front, each member's images beside the baseline's, and its export command."""

from __future__ import annotations

import sys

from tuner.commands.common import add_threads_option, check_int, check_out_file
from tuner.threads import check_threads

MAX_REPORT_IMAGES = 64


def register_report(ssub) -> None:
    p = ssub.add_parser("report", help="write one offline HTML page: interactive front, each member's images beside "
                                       "the baseline's, difference maps, export commands")
    p.add_argument("study", help="study TOML file")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="the HTML file to write (.html)")
    p.add_argument("--n-images", type=int, default=8, metavar="N",
                   help=f"images per config, the study's first N seeds (default 8, at most {MAX_REPORT_IMAGES})")
    add_threads_option(p, "the TOML's [model] threads, else ")
    p.add_argument("--no-progress", action="store_true", help="no progress bar; one log line per config instead")
    p.set_defaults(func=study_report)


def study_report(args) -> int:
    import dataclasses

    from tuner.errors import TunerError
    from tuner.progress import bars_enabled
    from tuner.report.build import build_report
    from tuner.study.spec import load_spec
    from tuner.threads import set_threads

    spec = load_spec(args.study)
    check_int("--n-images", args.n_images, 1, MAX_REPORT_IMAGES)
    check_threads(args.threads)
    out = check_out_file(args.out, "--out", (".html", ".htm"))
    if args.threads is not None:
        spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, threads=args.threads))
    set_threads(spec.model.threads)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    result = build_report(spec, args.study, args.n_images, bar=not args.no_progress and bars_enabled(), log=log)
    try:
        out.write_text(result["html"], encoding="utf-8")
    except OSError as e:
        raise TunerError(f"--out {out}: cannot write ({e.strerror or type(e).__name__})") from None
    print(f"report: {len(result['members'])} front members and the baseline, {result['n_images']} images each -> {out}")
    return 0
