"""The layers import downwards only: ``adjoint.ad`` (tracing AD) needs nothing from the ODE core.

Checked statically over every import statement of the package (module level and inside functions),
since importing ``adjoint.ad`` at run time always runs ``adjoint/__init__.py`` first.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])

PKG = Path(__file__).resolve().parents[1] / "adjoint"

#: what the tracing AD may import from the rest of the package: the generated-module layer and the
#: vectorisable math that generated code calls
AD_MAY_IMPORT = {"adjoint._modules", "adjoint._vecmath"}


def _imports(path: Path) -> set:
    """Absolute names of the ``adjoint`` modules that ``path`` imports."""
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "adjoint"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "adjoint":
                continue
            if node.module is None or mod in ("adjoint", "adjoint.ad"):  # `from .. import x`: x is a module
                out |= {f"{mod}.{a.name}" for a in node.names}
            else:
                out.add(mod)
    return out


def test_the_helper_sees_relative_and_absolute_imports(tmp_path):
    assert "adjoint._problem" in _imports(PKG / "_traced.py")
    assert "adjoint.ad" in {m[: len("adjoint.ad")] for m in _imports(PKG / "_traced.py")}
    assert "adjoint._modules" in _imports(PKG / "ad" / "_codegen.py")


def test_ad_imports_nothing_from_the_core():
    bad = {}
    for path in sorted((PKG / "ad").glob("*.py")):
        outside = {m for m in _imports(path) if not m.startswith("adjoint.ad")} - AD_MAY_IMPORT
        if outside:
            bad[path.name] = sorted(outside)
    assert not bad, f"adjoint.ad imports the core: {bad}"


def test_the_module_layer_is_a_leaf():
    for name in AD_MAY_IMPORT:
        path = PKG / f"{name.split('.')[-1]}.py"
        assert _imports(path) <= {name}, (name, _imports(path))


def test_tracing_leaves_numbas_numpy_registry_intact(tmp_path):
    """Tracing patches np.array for a moment; a numba compilation during the trace (an opaque call of
    a numba function of t) must not register the patched function: afterwards any numba function of
    the process still compiles np.array (a fresh process, so that tracing happens first)."""
    code = (
        "import numpy as np, numba, adjoint\n"
        "from adjoint.problems import lotka_volterra as lv\n"
        "adjoint.evaluate(lv.make_problem(100), params=lv.initial_guess())\n"
        "f = numba.njit(lambda a, b: np.array([a, b]) + np.asarray([a, b]))\n"
        "print(f(1.0, 2.0).tolist())\n"
    )
    env = dict(os.environ, ADJOINT_CACHE_DIR=str(tmp_path / "cache"), NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[2.0, 4.0]"
