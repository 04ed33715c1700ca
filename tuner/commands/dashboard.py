"""`tuner dashboard`: optuna-dashboard on a study's storage, with its constraints visible.

Validates its input first (one-line error, exit 2, nothing written)."""

from __future__ import annotations

import sys

from tuner.commands.common import check_int
from tuner.errors import TunerError


def register(sub) -> None:
    p = sub.add_parser("dashboard", help="serve optuna-dashboard on the study's storage (Ctrl-C stops it)")
    p.add_argument("study", help="study TOML file")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for every interface)")
    p.set_defaults(func=run_dashboard)


def run_dashboard(args) -> int:
    from tuner.storage.dashboard_view import serve
    from tuner.study.spec import load_spec
    from tuner.storage.database import open_storage, study_exists

    spec = load_spec(args.study)
    check_int("--port", args.port, 1, 65535)
    if not study_exists(spec.storage, spec.name):
        raise TunerError(f"study '{spec.name}' does not exist in {spec.storage} (run `tuner study run` first)")
    print(f"optuna-dashboard on {spec.storage}: http://{args.host}:{args.port}/ (Ctrl-C stops it)", file=sys.stderr)
    try:
        serve(open_storage(spec.storage), args.host, args.port)
    except OSError as e:  # port taken, address not available
        raise TunerError(f"dashboard: cannot listen on {args.host}:{args.port} ({e.strerror or e})") from None
    except KeyboardInterrupt:
        pass
