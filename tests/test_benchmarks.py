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
         "--repeats", "1", "--naive", "--out", str(out)],
        check=True, capture_output=True, timeout=300,
    )
    result = json.loads(out.read_text())
    names = [r["schedule"] for r in result["rows"]]
    ecad_rows = ["no_caching", "every_2", "every_3", "every_5", "random_20pct"]
    assert names == ecad_rows + [f"naive_{n}" for n in ecad_rows[1:]]
    assert all(r["limit_speedup"] >= 1.0 for r in result["rows"])
    assert result["rows"][0]["block_macs_fraction"] == 1.0


def test_roofline_recorder_counts_a_linear_and_sdpa_as_kernels():
    """The roofline model's inputs: FLOPs and bytes per kernel on meta tensors, SDPA as one fused kernel."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    import torch.nn.functional as F

    from roofline_apply import FusedAttention, OpRecorder

    lin = torch.nn.Linear(64, 32, device="meta", dtype=torch.float16)
    x = torch.empty(2, 10, 64, device="meta", dtype=torch.float16)
    q = torch.empty(2, 4, 16, 8, device="meta", dtype=torch.float16)
    rec = OpRecorder()
    with torch.inference_mode(), FusedAttention(rec), rec:
        y = lin(x)
        y.view(-1)  # a view launches nothing
        F.scaled_dot_product_attention(q, q, q)
    assert len(rec.rows) == 2
    (_, _, lin_flops, lin_bytes), (_, _, attn_flops, attn_bytes) = rec.rows
    assert lin_flops == 2 * 20 * 64 * 32
    assert lin_bytes == 2 * (20 * 64 + 64 * 32 + 32 + 20 * 32)
    assert attn_flops == 4 * 8 * 16 * 16 * 8
    assert attn_bytes == 4 * q.numel() * 2
