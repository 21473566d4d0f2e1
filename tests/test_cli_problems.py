"""`python -m adjoint solve NAME` for the separable, reversible and argmin problems (small settings)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> extra CLI options (small settings; --steps only where the problem takes it)
CASES = {
    "harmonic_oscillator": ["--steps", "200", "--max-iter", "5"],
    "kepler": ["--steps", "400", "--max-iter", "5"],
    "revnet": ["--steps", "5", "--max-iter", "5"],
    "ridge": ["--max-iter", "5"],
    "logistic": ["--max-iter", "5"],
}


def run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, "-m", "adjoint", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )


@pytest.mark.parametrize("name", list(CASES))
def test_solve_prints_progress_and_saves(name, tmp_path):
    out = run("solve", name, "--out", str(tmp_path), *CASES[name])
    assert out.returncode == 0, out.stdout + out.stderr
    progress = [line for line in out.stdout.splitlines() if "|grad|" in line]
    assert len(progress) >= 2, out.stdout
    assert (tmp_path / f"{name}.png").stat().st_size > 0
    summary = json.loads((tmp_path / f"{name}.json").read_text())
    assert "objective" in summary
    assert summary["iterations"] <= 5 and len(summary["history"]) >= 2


@pytest.mark.parametrize("name", ["harmonic_oscillator", "kepler"])
def test_separable_problems_reject_runge_kutta(name, tmp_path):
    out = run("solve", name, "--method", "rk4", "--steps", "50", "--out", str(tmp_path))
    assert out.returncode == 2
    assert "leapfrog" in out.stderr and "verlet" in out.stderr


@pytest.mark.parametrize("name,option", [("revnet", "--method"), ("ridge", "--steps"), ("logistic", "--method")])
def test_options_a_problem_does_not_take(name, option, tmp_path):
    out = run("solve", name, option, "5" if option == "--steps" else "euler", "--out", str(tmp_path))
    assert out.returncode == 2
    assert f"does not take {option}" in out.stderr
