"""The README's main job at full size: slow, so kept out of the default run (pytest -m slow)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quickstart_runs_over_grpc_under_three_minutes(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "persona_sim.cli", "run", str(ROOT / "scenarios/quickstart.yaml"),
                           "--out", str(tmp_path / "q"), "--quiet"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "q" / "summary.json").read_text())
    persona = summary["methods"]["persona-s"]
    assert persona["adaptations"] > 500 and persona["failed_adaptations"] == 0
    assert persona["rtt_ms_p50"] > 2 * 20      # two propagation delays of 20 ms at least
