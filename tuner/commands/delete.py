"""`tuner study delete STUDY.toml --yes`: remove a study (Optuna's rows and tuner's) from its storage."""

from __future__ import annotations

from tuner.errors import TunerError


def register_delete(ssub) -> None:
    p = ssub.add_parser("delete", help="delete the study from its storage: its trials, budget, workers and "
                                       "Pareto snapshots (asks for --yes)")
    p.add_argument("study", help="study TOML file")
    p.add_argument("--yes", action="store_true", help="really delete (without it, nothing is changed)")
    p.add_argument("--json", action="store_true", help="print what was deleted as one JSON object")
    p.set_defaults(func=study_delete)


def study_delete(args) -> int:
    from tuner.commands.common import print_result
    from tuner.study.delete import delete_study
    from tuner.study.spec import load_spec

    spec = load_spec(args.study)
    if not args.yes:
        raise TunerError(f"this deletes study '{spec.name}' and all its trials from its storage; run again with --yes")
    print_result(delete_study(spec), args.json)
    return 0
