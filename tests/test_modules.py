"""The one generated-module layer (adjoint._modules): the cache folder, its fallbacks and healing.

Each case runs in a fresh process (the layer memoises modules and folder verdicts per process) with
its own ADJOINT_CACHE_DIR, and compares results with a run on a writable cache bit for bit.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A hand-written problem (the scalar-generated backend for store-all, the bound generic kernels for
# Revolve with RK4 on a three-state variant is not needed: Revolve runs the generated executor) and a
# plain-numpy problem (modules of adjoint.ad); the gradients' bytes are printed as hex digests.
CHILD = r"""
import hashlib, json, sys, warnings
import numpy as np
warnings.simplefilter("always")
import adjoint
from adjoint._modules import CacheWarning
from adjoint.problems import pendulum

def digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]

out = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    prob = pendulum.make_problem(steps=40)
    c = pendulum.initial_guess(40)
    for name, ck in (("storeall", adjoint.StoreAll()), ("revolve", adjoint.Revolve(snapshots=3))):
        r = adjoint.solve_adjoint(prob, controls=c, checkpoint=ck)
        out[name] = digest([r.value], r.grad.controls, r.grad.x0)
    def field(x, c, p, t):
        return np.array([x[1], -p[0] * np.sin(x[0])])
    tp = adjoint.ControlProblem(field, x0=[1.0, 0.0], t_span=(0.0, 1.0), steps=30,
                                terminal_cost=lambda x, p: x[0] ** 2 + x[1] ** 2)
    r = adjoint.solve_adjoint(tp, params=[2.0], method=adjoint.RK4())
    out["traced"] = digest([r.value], r.grad.params, r.grad.x0)
    g = adjoint.grad(lambda v: np.sum(np.tanh(v) ** 2))(np.linspace(-1.0, 1.0, 5))
    out["ad"] = digest(g)
out["cache_warnings"] = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
print("RESULT " + json.dumps(out))
"""


def _run(cache, *, wait=True, numba_cache=None):
    env = dict(os.environ, ADJOINT_CACHE_DIR=str(cache), PYTHONDONTWRITEBYTECODE="1")
    if numba_cache is not None:  # numba's machine code of the library and of the generated modules
        env["NUMBA_CACHE_DIR"] = str(numba_cache)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return _result(proc) if wait else proc


def _result(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"child failed:\n{err[-3000:]}"
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def _values(res):
    return {k: v for k, v in res.items() if k != "cache_warnings"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Results with a writable, empty cache folder (no warning expected)."""
    res = _run(tmp_path_factory.mktemp("cache"))
    assert res["cache_warnings"] == []
    return res


@pytest.mark.parametrize("kind", ["a regular file", "below a regular file"])
def test_unwritable_cache_compiles_in_memory_and_warns_once(reference, tmp_path, kind):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    cache = blocker if kind == "a regular file" else blocker / "sub"
    res = _run(cache)
    assert _values(res) == _values(reference)
    assert len(res["cache_warnings"]) == 1, res["cache_warnings"]
    msg = res["cache_warnings"][0]
    assert str(cache) in msg and "ADJOINT_CACHE_DIR" in msg and "in memory" in msg
    assert blocker.read_text() == "not a folder"


def test_two_processes_compile_into_one_empty_cache(reference, tmp_path):
    cache = tmp_path / "shared"
    procs = [_run(cache, wait=False) for _ in range(2)]
    results = [_result(p) for p in procs]
    for res in results:
        assert _values(res) == _values(reference)
        assert res["cache_warnings"] == []
    # no temporary file is left behind, and every module is complete Python
    assert not list(cache.glob("*.tmp"))
    modules = list(cache.glob("_adjoint_*.py"))
    assert modules
    for path in modules:
        compile(path.read_text(), str(path), "exec")
    # a third process loads what the two wrote
    assert _values(_run(cache)) == _values(reference)


def test_damaged_module_files_are_written_again(reference, tmp_path):
    cache = tmp_path / "cache"
    _run(cache)
    modules = sorted(cache.glob("_adjoint_*.py"))
    assert {p.name.split("_")[2] for p in modules} >= {"ad", "scalar"}
    damages = [lambda t: t[: len(t) // 2], lambda t: "", lambda t: "def (:\n" + t]  # truncated, empty, garbled
    for i, path in enumerate(modules):
        path.write_text(damages[i % 3](path.read_text()))
    res = _run(cache)
    assert _values(res) == _values(reference)
    assert len(res["cache_warnings"]) == len(modules)
    assert all("written again" in m and str(cache) in m for m in res["cache_warnings"])
    # healed: the next process loads without a warning
    assert _run(cache)["cache_warnings"] == []


def _damage_bytes(kind, data):
    if kind == 0:
        return data[: len(data) // 2]  # truncated
    if kind == 1:
        return b""  # empty
    mid = len(data) // 2  # garbled: bytes flipped in the middle (inside the machine code of a .nbc)
    return data[:mid] + bytes(b ^ 0x5A for b in data[mid : mid + 64]) + data[mid + 64 :]


@pytest.mark.parametrize("suffix", [".nbi", ".nbc"])
def test_damaged_numba_cache_files_are_compiled_again(reference, tmp_path, suffix):
    cache, numba_cache = tmp_path / "cache", tmp_path / "numba"
    first = _run(cache, numba_cache=numba_cache)
    assert _values(first) == _values(reference)
    files = sorted(numba_cache.rglob("*" + suffix))
    assert len(files) >= 6, files  # the library's kernels and the generated modules' functions
    for i, path in enumerate(files):
        path.write_bytes(_damage_bytes(i % 3, path.read_bytes()))
    res = _run(cache, numba_cache=numba_cache)
    assert _values(res) == _values(reference)  # bit for bit: recompiled, never a damaged load
    healed = [m for m in res["cache_warnings"] if "could not be loaded" in m]
    if suffix == ".nbc":  # every damaged data file is caught, by unpickling or by its checksum
        assert len(healed) >= len(files) * 2 // 3, (len(files), res["cache_warnings"])
    else:  # a garbled index may still unpickle (then its entries just miss): truncated and empty warn
        assert len(healed) >= len(files) // 2, (len(files), res["cache_warnings"])
    assert all(str(numba_cache) in m for m in healed)
    # healed: the next process loads without a warning
    assert _run(cache, numba_cache=numba_cache)["cache_warnings"] == []


#: child-process prelude: records the qualified name of every function numba compiles in ``compiled``
COMPILE_LISTENER = r"""
from numba.core import event
compiled = []
class Listener(event.Listener):
    def on_start(self, ev):
        pass
    def on_end(self, ev):
        py = ev.data["dispatcher"].py_func
        compiled.append(f"{py.__module__}.{py.__qualname__}")
event.register("numba:compile", Listener())
"""

WARM_CHILD = (
    COMPILE_LISTENER
    + r"""
import json, numpy as np
import adjoint
from adjoint.problems import harmonic_oscillator as ho, pendulum
prob = ho.make_problem(200)
r1 = adjoint.solve_adjoint(prob, params=[1.3], method=adjoint.Leapfrog(), checkpoint=adjoint.Reversible())
r2 = adjoint.solve_adjoint(prob, params=[1.3], method=adjoint.Leapfrog(), checkpoint=adjoint.StoreAll())
r3 = adjoint.solve_adjoint(pendulum.make_problem(50), controls=pendulum.initial_guess(50))
ours = [c for c in compiled if c.startswith(("adjoint", "_adjoint"))]
print(json.dumps({"ours": ours, "backends": [r.stats.backend for r in (r1, r2, r3)], "g": float(r1.grad.params[0])}))
"""
)


def test_a_second_process_loads_every_kernel_from_the_cache(tmp_path):
    """Warm caches: the second process compiles none of adjoint's functions, for the scalar backend and for
    the generic one with separable dynamics (their full-state fields are generated into a cached module)."""
    env = dict(
        os.environ,
        ADJOINT_CACHE_DIR=str(tmp_path / "adj"),
        NUMBA_CACHE_DIR=str(tmp_path / "numba"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", WARM_CHILD], cwd=ROOT, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    assert cold["backends"] == ["generic", "generic", "scalar"]
    assert cold["ours"], "the first process must compile (else this test measures nothing)"
    assert warm["ours"] == [], warm["ours"]
    assert warm["g"] == cold["g"]


FACTORY = r'''
import numpy as np
from numba import njit


def decay(k):
    """Closures over a constant: x' = -k p x (every component), cost |x(T)|^2 / 2."""

    @njit(cache=True)
    def f(x, c, p, t, out):
        for i in range(x.shape[0]):
            out[i] = -k * p[0] * x[i]

    @njit(cache=True)
    def vjp(x, c, p, t, z, out_x, out_c, out_p):
        out_p[0] = 0.0
        for i in range(x.shape[0]):
            out_x[i] = -k * p[0] * z[i]
            out_p[0] += -k * x[i] * z[i]

    return f, vjp


@njit(cache=True)
def value(x, c, p, t):
    return 0.5 * np.sum(x * x)


@njit(cache=True)
def grad(x, c, p, t, out_x, out_c, out_p):
    out_x[:] = x
    out_p[:] = 0.0
'''

CLOSURE_CHILD = (
    COMPILE_LISTENER
    + r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import adjoint, closure_factory as cf
from adjoint.problems import revnet
out = {}
for k in (2.0, 3.0):
    f, vjp = cf.decay(k)
    prob = adjoint.ControlProblem(adjoint.Dynamics(f, vjp, state_dim=2, param_dim=1), [1.0, 0.5], (0.0, 1.0), 10,
                                  terminal_cost=adjoint.Cost(cf.value, cf.grad))
    for backend in ("scalar", "generic"):
        r = adjoint.solve_adjoint(prob, params=[0.7], backend=backend)
        out[f"{k}-{backend}"] = [r.value, float(r.grad.params[0]), r.stats.backend]
pts, lab = revnet.two_moons(8, seed=0)
rp, lab = revnet.make_problem(pts, lab, steps=5, hidden=3)
r = adjoint.solve_adjoint(rp, params=revnet.with_labels(revnet.initial_params(3), lab), method=adjoint.Leapfrog(),
                          checkpoint=adjoint.Reversible())
out["revnet"] = [r.value, float(r.grad.params[0]), r.stats.backend]
ours = [c for c in compiled if c.startswith(("adjoint", "_adjoint"))]
print(json.dumps({"ours": ours, "out": out}))
"""
)


def test_closures_of_a_factory_load_from_the_cache_and_keep_their_constants(tmp_path):
    """Numba functions made by a factory (closures over numbers) are generated into cached modules under
    names that digest their closure values: a second process compiles none of adjoint's functions, and
    closures over different constants never share machine code (each result matches the closed form)."""
    (tmp_path / "closure_factory.py").write_text(FACTORY)
    env = dict(
        os.environ,
        ADJOINT_CACHE_DIR=str(tmp_path / "adj"),
        NUMBA_CACHE_DIR=str(tmp_path / "numba"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    runs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", CLOSURE_CHILD, str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    assert cold["ours"], "the first process must compile (else this test measures nothing)"
    assert warm["ours"] == [], warm["ours"]
    assert warm["out"] == cold["out"]
    # Euler: x_K = x0 (1 - tau k p)^K; J = |x_K|^2 / 2 = J0 a^(2K), dJ/dp = J0 2K a^(2K-1) (-tau k)
    K, tau, p, j0 = 10, 0.1, 0.7, 0.5 * (1.0 + 0.25)
    for k in (2.0, 3.0):
        a = 1.0 - tau * k * p
        for backend in ("scalar", "generic"):
            value, g, ran = warm["out"][f"{k}-{backend}"]
            assert ran == backend
            assert abs(value - j0 * a ** (2 * K)) <= 1e-14 * j0
            assert abs(g - j0 * 2 * K * a ** (2 * K - 1) * (-tau * k)) <= 1e-12 * abs(g)
    assert warm["out"]["revnet"][2] == "generic"


def _factory(obj):
    from numba import njit

    @njit
    def f(x):
        return x + len(obj)

    return f


def test_closures_over_objects_are_not_importable():
    from adjoint._modules import import_path

    factory = _factory
    assert import_path(factory([1, 2])) is None  # a list can change after compiling: never by name
    fn = factory((1, 2))
    path = import_path(fn)  # a tuple is a constant: registered by a digest of its value
    assert path is not None and path[0] == "adjoint._modules"
    assert import_path(factory((1, 3)))[1] != path[1]
    assert import_path(factory((1, 2)))[1] == path[1]
