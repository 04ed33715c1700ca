"""The `tuner` command: thin. Parses, calls the library, prints. Bad input -> one line, exit 2."""

from __future__ import annotations

import argparse
import sys

from tuner.errors import TunerError

# Each module in tuner/commands registers its subcommands.
from tuner.commands import evaluate as _evaluate_cmd
from tuner.commands import proxy as _proxy_cmd
from tuner.commands import profile as _profile_cmd
from tuner.commands import study as _study_cmd

COMMAND_MODULES = [_proxy_cmd, _evaluate_cmd, _profile_cmd, _study_cmd]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors also exit 2 with one line
        self.exit(2, f"tuner: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tuner", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TunerError as e:
        print(f"tuner: error: {e}", file=sys.stderr)
        return TunerError.exit_code
    except KeyboardInterrupt:
        print("tuner: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
