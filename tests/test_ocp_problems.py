"""The ready constrained problems against their analytic or published optima (acceptance of the
constrained-control issue): Bryson-Denham (J = 4 / (9 l)), the minimum-time double integrator
(T = 2), the Goddard rocket and the robot arm (COPS 3.0: h(T) = 1.01283, T = 9.14101)."""

from __future__ import annotations

import json

import pytest


def _summary(result):
    return json.loads(open(result.json).read())


def test_bryson_denham_at_400_steps(tmp_path):
    from adjoint.problems import bryson_denham

    s = _summary(bryson_denham.solve(output_dir=str(tmp_path), steps=400, verbose=False))
    assert s["success"] and s["max_violation"] <= 1e-8
    assert abs(s["objective"] - 4.0) < 1e-2


def test_minimum_time_double_integrator_at_200_steps(tmp_path):
    from adjoint.problems import double_integrator

    s = _summary(double_integrator.solve(output_dir=str(tmp_path), steps=200, verbose=False))
    assert s["success"] and s["max_violation"] <= 1e-8
    assert abs(s["final_time"] - 2.0) < 1e-2


def test_goddard_rocket_within_1e_3_of_cops(tmp_path):
    from adjoint.problems import goddard

    s = _summary(goddard.solve(output_dir=str(tmp_path), steps=200, verbose=False))
    assert s["success"] and s["max_violation"] <= 1e-7
    assert abs(s["final_height"] - goddard.COPS_HEIGHT) / goddard.COPS_HEIGHT < 1e-3


def test_robot_arm_within_1e_3_of_cops(tmp_path):
    pytest.importorskip("casadi")
    from adjoint.problems import robot_arm

    s = _summary(robot_arm.solve(output_dir=str(tmp_path), steps=200, verbose=False, solver="ipopt"))
    assert s["success"] and s["max_violation"] <= 1e-7
    assert abs(s["final_time"] - robot_arm.COPS_TIME) / robot_arm.COPS_TIME < 1e-3


def test_pendulum_min_time_multiple_shooting_finds_the_single_shooting_optimum(tmp_path):
    pytest.importorskip("casadi")
    from adjoint.problems import pendulum_min_time as pm

    single = _summary(pm.solve(output_dir=str(tmp_path / "s1"), steps=100, verbose=False, solver="ipopt"))
    multi = _summary(pm.solve(output_dir=str(tmp_path / "s4"), steps=100, verbose=False, solver="ipopt", segments=4))
    for s in (single, multi):
        assert s["success"] and s["max_violation"] <= 1e-8
    assert abs(multi["final_time"] - single["final_time"]) < 1e-6 * single["final_time"]
    assert 3.0 < single["final_time"] < 4.5  # a swing-up: |u| <= 3 cannot lift the pendulum directly
