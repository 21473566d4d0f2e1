"""The newcomer's main job: python -m adjoint list / solve."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "adjoint", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )


def test_list_names_problems():
    out = run("list")
    assert out.returncode == 0, out.stderr
    for name in ("pendulum", "lqr", "lotka_volterra", "perceptron"):
        assert name in out.stdout


def test_solve_lqr_writes_png_and_json(tmp_path):
    out = run("solve", "lqr", "--steps", "40", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "iter" in out.stdout and "|grad|" in out.stdout
    summary = json.loads((tmp_path / "lqr.json").read_text())
    assert summary["relative_gap"] < 1e-6
    assert (tmp_path / "lqr.png").stat().st_size > 10_000


def test_unknown_problem_is_an_error():
    out = run("solve", "nope")
    assert out.returncode == 2
    assert "unknown problem 'nope'" in out.stderr


def test_solve_reports_only_its_own_outputs(tmp_path, monkeypatch, capsys):
    """A problem that writes no JSON gets one written by the CLI; another problem's JSON written a
    moment earlier in the same folder is never reported as this run's summary (a newcomer running
    every problem into one folder saw point_cloud_flow report logistic.json)."""
    import types

    from adjoint import cli

    fake = types.ModuleType("fake_problem")
    fake.__doc__ = "A fake problem."

    def solve(output_dir="."):
        return {"objective": 1.5}

    fake.solve = solve
    monkeypatch.setitem(sys.modules, "fake_problem", fake)
    monkeypatch.setattr(cli, "PROBLEMS", {"fake": "fake_problem"})
    monkeypatch.setattr(cli, "_available", lambda: {"fake": "fake_problem"})
    (tmp_path / "other.json").write_text("{}")
    (tmp_path / "other.png").write_bytes(b"png")
    assert cli.main(["solve", "fake", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"summary: {tmp_path / 'fake.json'}" in out
    assert "other" not in out and "plot:    (none)" in out
    assert json.loads((tmp_path / "fake.json").read_text()) == {"problem": "fake", "objective": 1.5}
