"""Dot-product test <J u, v> = <u, J^T v> for every hand-written VJP in problems/, and every
hand-written cost gradient against central differences."""

import numpy as np
import pytest

from adjoint.problems import harmonic_oscillator, kepler, lotka_volterra, lqr, pendulum, perceptron, revnet


def _dynamics():
    out = [(m.__name__, m.DYNAMICS) for m in (lotka_volterra, pendulum, lqr, perceptron, harmonic_oscillator, kepler)]
    prob, _ = revnet.make_problem(
        points=np.random.default_rng(0).normal(size=(6, 2)), labels=np.array([1.0, -1, 1, -1, 1, -1]), hidden=3
    )
    out.append(("adjoint.problems.revnet", prob.dynamics))
    return out


def _costs():
    out = []
    for m, names in (
        (lotka_volterra, ("RUNNING", "TERMINAL")),
        (pendulum, ("EFFORT", "UPRIGHT")),
        (lqr, ("RUNNING", "TERMINAL")),
        (perceptron, ("LOSS", "DECAY_COST")),
        (harmonic_oscillator, ("TERMINAL",)),
        (kepler, ("MISS",)),
    ):
        for nm in names:
            out.append((f"{m.__name__}.{nm}", m.DYNAMICS, getattr(m, nm)))
    return out


def _point(dyn, rng):
    n, m, q = dyn.state_dim, dyn.control_dim, dyn.param_dim
    return (0.5 + 0.3 * rng.standard_normal(n), 0.3 * rng.standard_normal(m), 0.5 + 0.2 * rng.random(q), 0.37)


def _field_pairs(dyn):
    pairs = [("f", dyn.f, dyn.vjp)]
    if getattr(dyn, "g", dyn.f) is not dyn.f:  # separable: second half-field
        pairs.append(("g", dyn.g, dyn.gvjp))
    return pairs


@pytest.mark.parametrize("name, dyn", _dynamics(), ids=[d[0] for d in _dynamics()])
def test_vjp_dot_product(name, dyn):
    rng = np.random.default_rng(7)
    n, m, q = dyn.state_dim, dyn.control_dim, dyn.param_dim
    for label, f, vjp in _field_pairs(dyn):
        x, c, p, t = _point(dyn, rng)
        ux, uc, up = rng.standard_normal(n), rng.standard_normal(m), rng.standard_normal(q)
        v = rng.standard_normal(n)
        # J u by central differences (an independent reference: only f is used)
        h = 1e-6
        fp, fm = np.empty(n), np.empty(n)
        f(x + h * ux, c + h * uc, p + h * up, t, fp)
        f(x - h * ux, c - h * uc, p - h * up, t, fm)
        Ju = (fp - fm) / (2 * h)
        ox, oc, op = np.full(n, np.nan), np.full(m, np.nan), np.full(q, np.nan)
        vjp(x, c, p, t, v, ox, oc, op)
        lhs = Ju @ v
        rhs = ux @ ox + uc @ oc + up @ op
        scale = np.abs(Ju).sum() * np.abs(v).max() + 1e-12
        assert abs(lhs - rhs) <= 1e-7 * scale, (name, label, lhs, rhs)


@pytest.mark.parametrize("name, dyn, cost", _costs(), ids=[c[0] for c in _costs()])
def test_cost_gradient_vs_central_differences(name, dyn, cost):
    rng = np.random.default_rng(11)
    n, q = dyn.state_dim, dyn.param_dim
    m = dyn.control_dim if "TERMINAL" not in name and name.split(".")[-1] not in ("UPRIGHT", "LOSS", "MISS") else 0
    x, _, p, t = _point(dyn, rng)
    c = 0.3 * rng.standard_normal(m)
    ux, uc, up = rng.standard_normal(n), rng.standard_normal(m), rng.standard_normal(q)
    h = 1e-6
    fd = (cost.value(x + h * ux, c + h * uc, p + h * up, t) - cost.value(x - h * ux, c - h * uc, p - h * up, t)) / (
        2 * h
    )
    gx, gc, gp = np.full(n, np.nan), np.full(m, np.nan), np.full(q, np.nan)
    cost.grad(x, c, p, t, gx, gc, gp)
    ad = ux @ gx + uc @ gc + up @ gp
    assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gc)) and np.all(np.isfinite(gp))
    assert abs(fd - ad) <= 1e-7 * (1.0 + abs(fd)), (name, fd, ad)


def test_lotka_volterra_observation_is_the_division_form_bit_for_bit():
    """observation() multiplies by the reciprocal grid spacing; on this grid (spacing 0.5) that must
    equal the textbook interpolation with divisions exactly, and match numpy's interp inside."""
    lv = lotka_volterra
    rng = np.random.default_rng(3)
    ts = np.concatenate([lv.T_OBS, rng.uniform(-1.0, lv.T_END + 1.0, 2000), np.linspace(0, lv.T_END, 1001)])
    for t in ts:
        j = min(max(int((t - lv.T_OBS[0]) / (lv.T_OBS[1] - lv.T_OBS[0])), 0), lv.T_OBS.shape[0] - 2)
        w = (t - lv.T_OBS[j]) / (lv.T_OBS[j + 1] - lv.T_OBS[j])
        ref = ((1.0 - w) * lv.Y_OBS[j, 0] + w * lv.Y_OBS[j + 1, 0], (1.0 - w) * lv.Y_OBS[j, 1] + w * lv.Y_OBS[j + 1, 1])
        got = lv.observation(t)
        assert got == ref, t
        if 0.0 <= t <= lv.T_END:
            for i in range(2):
                assert got[i] == pytest.approx(np.interp(t, lv.T_OBS, lv.Y_OBS[:, i]), rel=1e-14, abs=1e-14)
