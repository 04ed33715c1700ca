"""Progress: a bar only on a terminal that reports a width; otherwise one line per unit with an ETA."""

from __future__ import annotations

import fcntl
import os
import struct
import termios

from tuner.progress import Overall, bars_enabled


def _pty(columns: int):
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    return leader, os.fdopen(follower, "w")


def test_bars_only_on_a_terminal_with_columns(tmp_path):
    with open(tmp_path / "log.txt", "w") as log_file:
        assert not bars_enabled(log_file)  # a log file, CI, a pipe
    for columns, expected in ((0, False), (80, True)):
        leader, stream = _pty(columns)
        try:
            assert bars_enabled(stream) is expected
        finally:
            stream.close()
            os.close(leader)


def test_lines_carry_count_elapsed_and_eta():
    lines = []
    with Overall(3, "report: images", bar=False, log=lines.append, unit="config") as progress:
        progress.advance("baseline")
        progress.advance("trial 4")
    assert len(lines) == 2 and lines[0].startswith("report: images [1/3, ") and "ETA" in lines[0]
    assert lines[1].endswith("trial 4") and "[2/3, " in lines[1]
    silent = Overall(2, "validate", bar=False, log=None)
    silent.advance("baseline")  # the caller's own line carries status()
    assert silent.status().startswith("[1/2, ")
