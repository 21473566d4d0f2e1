"""The package layout: the top-level folder problems/ is ``adjoint.problems`` (pyproject.toml maps it
for wheels and editable installs; adjoint/__init__.py for a source checkout that is not installed)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_subpackage_and_maps_problems():
    tomllib = pytest.importorskip("tomllib")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    tree = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "adjoint").rglob("__init__.py")}
    assert set(cfg["packages"]) == tree | {"adjoint.problems"}
    assert cfg["package-dir"] == {"adjoint.problems": "problems"}


def test_adjoint_problems_from_a_source_checkout(tmp_path):
    code = (
        "import sys, adjoint.cli, adjoint.problems.pendulum as p, adjoint.problems as ap\n"
        "print(p.__file__)\n"
        "print(ap.ProblemResult is adjoint.cli.ProblemResult, 'problems' in sys.modules)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert out.returncode == 0, out.stderr
    path, flags = out.stdout.split("\n")[:2]
    assert Path(path) == ROOT / "problems" / "pendulum.py"
    assert flags == "True False"
