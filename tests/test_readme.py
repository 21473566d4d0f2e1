"""The README's quickstart runs as written, and its commands are the ones CI runs."""

import os
import re

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
    with open(os.path.join(ROOT, "README.md")) as fh:
        return fh.read()


def test_quickstart_runs_and_its_gradient_is_right():
    code = re.findall(r"```python\n(.*?)```", _readme(), re.S)[0]
    ns = {}
    exec(compile(code, "README quickstart", "exec"), ns)
    res = ns["res"]
    chk = ns["adjoint"].check_gradient(ns["prob"], params=[1.0, 0.4, 0.4, 0.8], method=ns["adjoint"].RK4())
    assert chk.max_rel_error < 1e-8
    assert np.all(np.isfinite(res.grad.params))


def test_ci_runs_the_readme_test_command_verbatim():
    cmds = re.findall(r"```bash\n(.*?)\n```", _readme(), re.S)
    test_cmd = [c for c in cmds if "pytest" in c][0].strip()
    with open(os.path.join(ROOT, ".ci", "run")) as fh:
        ci = fh.read()
    assert test_cmd in ci
