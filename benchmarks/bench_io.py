"""How every benchmark records its result: indented JSON (under benchmarks/results/) and a
one-line summary of everything but the per-row numbers."""

from __future__ import annotations

import json
from pathlib import Path


def write_result(result: dict, out: Path | None) -> None:
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
