"""The benchmark scripts keep running (tiny CPU mode); their numbers are recorded, not asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_apply_tiny_runs_and_reports_every_schedule(tmp_path):
    out = tmp_path / "r.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_apply.py"), "--tiny", "--batch", "2", "--steps", "6",
         "--repeats", "1", "--out", str(out)],
        check=True, capture_output=True, timeout=300,
    )
    result = json.loads(out.read_text())
    names = [r["schedule"] for r in result["rows"]]
    assert names == ["no_caching", "every_2", "every_3", "every_5", "random_20pct"]
    assert all(r["limit_speedup"] >= 1.0 for r in result["rows"])
    assert result["rows"][0]["block_macs_fraction"] == 1.0
