"""The package layout is the architecture: the import contracts in setup.cfg hold, and they bite."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from persona_sim.methods import METHODS
from persona_sim.scenario.schema import METHODS as SCENARIO_METHODS

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("persona_sim", "cloud_node", "device_node")


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports is not installed: pip install -r requirements-dev.txt")
    env = dict(os.environ, PYTHONPATH=str(root))   # the copy under test comes before the installed package
    return subprocess.run([exe, "--config", str(root / "setup.cfg"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_contracts_hold():
    proc = _lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def _copy_tree(dst: Path) -> None:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, dst / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.cfg", dst / "setup.cfg")


@pytest.mark.parametrize("module, line, contract", [
    ("persona_sim/data/dataset.py", "from ..sim import netsim", "import downward only"),          # upward
    ("persona_sim/sim/netsim.py", "from ..report import summary", "import downward only"),        # sideways
    ("persona_sim/train/bundle.py", "import cloud_node", "never imports the node shells"),
    ("persona_sim/sim/simulation.py", "import torch", "never import torch directly"),
    ("persona_sim/model/networks.py", "from ..wire.proto import persona_pb2", "only persona_sim.wire imports"),
])
def test_a_forbidden_import_breaks_a_contract(tmp_path, module, line, contract):
    _copy_tree(tmp_path)
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{line}  # planted by the test\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode != 0, proc.stdout
    report = " ".join(proc.stdout.split("Broken contracts")[-1].split())    # lint-imports wraps long lines
    assert contract in report and module[:-3].replace("/", ".") in report, proc.stdout


def test_the_method_registry_is_what_a_scenario_may_name():
    assert list(METHODS) == list(SCENARIO_METHODS)
    for name, method in METHODS.items():
        assert method.name == name and method.label
        # exactly one way to adapt, matching where it adapts
        assert (method.device is not None) == (method.where == "device")
        assert (method.adapt is not None or method.configure is not None) == (method.where != "device")


def test_nothing_outside_methods_branches_on_a_method_name():
    """A method's name appears as a literal only in its module and in the scenario schema's list of names."""
    allowed = {ROOT / "persona_sim" / "scenario" / "schema.py"} | set((ROOT / "persona_sim" / "methods").glob("*.py"))
    found = []
    for path in (ROOT / "persona_sim").rglob("*.py"):
        if path in allowed or "proto" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in METHODS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not found, "branch on a Method attribute instead: " + ", ".join(found)


def test_import_persona_sim_is_light():
    """The package root and its errors import without torch, grpc or the API's modules."""
    code = ("import sys, persona_sim, persona_sim.errors; "
            "print(sorted(m for m in ('torch', 'grpc', 'persona_sim.api') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
