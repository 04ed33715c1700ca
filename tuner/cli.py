"""The `tuner` command: thin. Parses, calls the library, prints. Bad input -> one line, exit 2."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from tuner import __version__
from tuner import signals
from tuner.errors import TunerError

# Each module in tuner/commands registers its subcommands.
from tuner.commands import apply as _apply_cmd
from tuner.commands import dashboard as _dashboard_cmd
from tuner.commands import evaluate as _evaluate_cmd
from tuner.commands import export as _export_cmd
from tuner.commands import proxy as _proxy_cmd
from tuner.commands import profile as _profile_cmd
from tuner.commands import study as _study_cmd

COMMAND_MODULES = [_study_cmd, _export_cmd, _apply_cmd, _dashboard_cmd, _evaluate_cmd, _profile_cmd,
                   _proxy_cmd]  # the order `tuner --help` lists

DESCRIPTION = """\
Search training-free accelerations of a diffusion U-Net jointly (token merging, feature caching,
fewer timesteps, quantization, solver coefficients) and get the Pareto front of measured latency
against image quality (FID).

Typical session (the embedded proxy model runs on a laptop CPU):
  tuner study run studies/default.toml        run or resume a search study
  tuner study pareto studies/default.toml     the front: latency, speedup, FID per member
  tuner export studies/default.toml --best --max-fid-increase 10 -o best.json
  tuner evaluate best.json                    re-measure the exported config against the baseline
  tuner apply best.json --out samples.png     images with the config applied
  tuner dashboard studies/default.toml        browse the study in optuna-dashboard"""

EPILOG = """\
`tuner COMMAND --help` lists a command's options. Bad input prints one line `tuner: error: ...`
and exits with code 2 before anything is written. Python API: `from tuner import apply, AccelConfig`."""

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader went away


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors also exit 2 with one line
        self.exit(2, f"tuner: error: {' '.join(message.split())}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tuner", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tuner {__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND",
                                title="commands")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _run(argv: list[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, argparse's errors: a code to return, as for commands
        return e.code if isinstance(e.code, int) else int(e.code is not None)
    try:
        with signals.raise_on_signals():  # SIGTERM and SIGHUP end a command as Ctrl-C does
            code = int(args.func(args) or 0)
    except TunerError as e:
        print(f"tuner: error: {e}", file=sys.stderr)
        return TunerError.exit_code
    except KeyboardInterrupt as e:
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            print(signals.line(e), file=sys.stderr)
        return signals.exit_code(e)
    sys.stdout.flush()  # a reader that went away shows up here, inside the BrokenPipe handler below
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        return _run(argv)
    except BrokenPipeError:
        # `tuner ... | head`: the reader has what it wanted. Stop quietly, and point stdout at /dev/null
        # so the interpreter's final flush does not print a second traceback.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass  # stdout is not a file descriptor (tests capture it): nothing to flush at exit
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
