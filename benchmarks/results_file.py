"""Where every benchmark writes its figures: <out>/<name>-<host>.json (benchmarks/results by default)."""
from __future__ import annotations

import json
import platform
from pathlib import Path


def write_result(out: Path, name: str, result: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{platform.node() or 'host'}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
