"""Headless Chromium for tests that look at a page as a person's browser renders it (offline: no network,
no sync, a throwaway profile). `chromium()` is None when the browser is not installed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--virtual-time-budget=10000"]


def chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def run_chromium(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout)


def dump_dom(page: Path) -> str:
    """The DOM after the page's scripts ran (load event included)."""
    done = run_chromium(["--dump-dom", page.resolve().as_uri()])
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def screenshot(page: Path, out: Path, size: str = "1400,2400") -> Path:
    done = run_chromium([f"--screenshot={out}", f"--window-size={size}", page.resolve().as_uri()])
    assert done.returncode == 0 and out.exists(), done.stderr[-2000:]
    return out
