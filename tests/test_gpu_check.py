"""benchmarks/gpu_check.py runs unchanged on a GPU machine; here its CPU dry run (tiny shapes) must
finish and write the JSON the GPU run writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_writes_its_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT), "TUNER_CACHE_DIR": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["dry_run"] is True and data["settings"]["device"] == "cpu"
    plain, compiled = data["timings"]["not_compiled"], data["timings"]["compiled"]
    for row in ("baseline", "ToMe r=0.5", "CA-ToMe CONFIG_3", "DeepCache N=3", "FRDiff", "solver dpmsolver++",
                "solver ddpm"):
        assert plain[row]["seconds_per_image"] > 0 and "failed" not in plain[row], (row, plain[row])
    assert set(compiled) == {"baseline", "ToMe r=0.5", "DeepCache N=3"}
    assert all(compiled[r]["seconds_per_image"] > 0 for r in compiled)
    # torchao rows say why they did not run here (no torchao, or no CUDA)
    assert plain["torchao int8 W8A8"].get("skipped", "").startswith("skipped:")
    assert plain["torchao fp8"].get("skipped", "").startswith("skipped:")
    study = data["study"]["summary"]
    assert study["states"] == {"COMPLETE": 3} and study["finished_in_study"] == 3
