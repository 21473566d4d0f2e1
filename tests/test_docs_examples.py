"""Every code example of README.md and docs/ runs: the ```python blocks of each page in order, in one
namespace per page (a page's blocks may build on each other), and its ``>>>`` examples as doctests.
A block that is not meant to run is fenced as ``text``."""

import doctest
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
)
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _read(page):
    with open(os.path.join(ROOT, page)) as fh:
        return fh.read()


WITH_CODE = [p for p in PAGES if BLOCK.search(_read(p))]
WITH_DOCTESTS = [p for p in PAGES if re.search(r"^>>> ", _read(p), re.M)]


def test_the_pages_have_examples():
    assert len(WITH_CODE) >= 15 and "docs/index.md" in WITH_CODE and "README.md" in WITH_CODE


@pytest.mark.parametrize("page", WITH_CODE)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # figures or files an example writes stay out of the checkout
    monkeypatch.setenv("MPLBACKEND", "Agg")
    ns = {"__name__": "__docs__"}
    for i, code in enumerate(BLOCK.findall(_read(page))):
        exec(compile(code, f"{page} (python block {i})", "exec"), ns)


@pytest.mark.parametrize("page", WITH_DOCTESTS)
def test_doctests_pass(page):
    res = doctest.testfile(os.path.join(ROOT, page), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0


def test_the_landing_page_fit_converges(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": "__docs__"}
    exec(compile(BLOCK.findall(_read("docs/index.md"))[0], "docs/index.md", "exec"), ns)
    fit = ns["fit"]
    assert fit.success and fit.fun < 1e-8
