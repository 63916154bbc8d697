"""The guide in ``docs/``: it builds, it documents every public name, its figures are measured.

The examples on every page run as doctests (``--doctest-glob`` in ``pyproject.toml``);
these tests check the rest: Sphinx builds the site with warnings as errors, every public
name has a docstring with an example and a place in the API reference, and every table
row and quoted output line of the performance page matches the file of
``benchmarks/results/`` it cites.
"""
import inspect
import pathlib
import re
import subprocess
import sys

import pytest

import batchdiff as bd
import batchdiff.fuzz
import batchdiff.numpy
import batchdiff.problems
from batchdiff.dask_arrays import DaskSparseResult

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"


def test_the_site_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx", reason="the docs extra is part of the test extra")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "html" / "api.html").exists()


def test_every_page_is_collected_as_a_doctest():
    """pytest runs the examples of every page: ``docs`` is a test path, ``*.md`` the glob."""
    import tomllib
    with open(ROOT / "pyproject.toml", "rb") as f:
        options = tomllib.load(f)["tool"]["pytest"]["ini_options"]
    assert "docs" in options["testpaths"] and "README.md" in options["testpaths"]
    assert "--doctest-glob=*.md" in options["addopts"].split()
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert "index.md" in pages and len(pages) >= 15, pages


def _public():
    """(name, object) of every public name: the package's ``__all__``, the functions of
    ``bd.numpy``, ``batchdiff.problems`` and ``batchdiff.fuzz`` that the reference shows,
    and the public methods of the classes users get back."""
    names = [(f"bd.{n}", getattr(bd, n)) for n in bd.__all__]
    names += [(f"bd.numpy.{n}", getattr(bd.numpy, n))
              for n in ("array", "asarray", "zeros", "ones", "stop_gradient", "detach")]
    names += [(f"bd.special.{n}", getattr(bd.special, n))
              for n in ("logsumexp", "softmax", "log_softmax", "polygamma")]
    names += [(f"batchdiff.problems.{n}", f) for n, f in vars(bd.problems).items()
              if inspect.isfunction(f) and not n.startswith("_")]
    names += [(f"batchdiff.fuzz.{n}", getattr(bd.fuzz, n)) for n in ("check_range", "random_graph")]
    for cls in (bd.Transformed, bd.SparseResult, bd.Pattern, DaskSparseResult):
        names.append((cls.__name__, cls))
        for n, member in vars(cls).items():
            if (n == "__call__" or not n.startswith("_")) and (
                    inspect.isfunction(member) or isinstance(member, classmethod)):
                names.append((f"{cls.__name__}.{n}", member))
    return names


@pytest.mark.parametrize("name, obj", _public(), ids=[n for n, _ in _public()])
def test_every_public_name_has_a_docstring_with_an_example(name, obj):
    doc = inspect.getdoc(obj.__func__ if isinstance(obj, classmethod) else obj)
    assert doc, f"{name} has no docstring"
    assert ">>>" in doc, f"the docstring of {name} has no example"


def test_every_name_of_the_package_is_in_the_api_reference():
    api = (DOCS / "api.md").read_text()
    missing = [n for n in bd.__all__ if f"batchdiff.{n}" not in api]
    assert not missing, f"docs/api.md does not document {missing}"


# -- the figures of the performance page --------------------------------------------------

_CITED = re.compile(r"benchmarks/results/([\w-]+\.(?:md|txt))")


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _figures(page):
    """(results file, kind, line) of every table row and quoted output line of ``page``:
    the file is the last one the prose named before it."""
    cited, fence, previous = None, None, ""
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence == "text":
            yield cited, "text", line
        elif fence is None and line.startswith("|"):
            is_header = not previous.startswith("|")
            if not is_header and not set(line) <= set("|-: "):
                yield cited, "row", line
        elif fence is None:
            names = _CITED.findall(line)
            cited = names[-1] if names else cited
        previous = line


def test_every_figure_on_the_performance_page_is_in_the_results_file_it_cites():
    figures = list(_figures(DOCS / "performance.md"))
    assert len(figures) > 100
    for cited, kind, line in figures:
        assert cited is not None, f"no results file named before {line!r}"
        source = (RESULTS / cited).read_text()
        if kind == "text":
            assert line.strip() in [s.strip() for s in source.splitlines()], (cited, line)
            continue
        row = _cells(line)
        rows = [_cells(s) for s in source.splitlines() if s.startswith("|")]
        assert any(r[0] == row[0] and all(c in r for c in row) for r in rows), (
            f"{line!r} is not a row of {cited}")


def test_the_readme_speed_up_over_jax_is_the_one_measured():
    measured = re.search(r"Geometric mean speed-up of batchdiff \(auto\) over JAX: ([\d.]+x)",
                         (RESULTS / "cpu.md").read_text()).group(1)
    readme = " ".join((ROOT / "README.md").read_text().split())
    page = " ".join((DOCS / "performance.md").read_text().split())
    assert f"over JAX `jit(vmap(...))` of the same per-point function was {measured}" in readme
    assert f"the geometric mean speed-up of `auto` over JAX on these problems was {measured}" in page


# -- what the guide is not --------------------------------------------------------------

HISTORY = re.compile(r"this commit|this session|before the change|the run before|"
                     r"targets? of (the )?issue|the issue's|back-end issue|"
                     r"not committed|ad[- ]hoc|previously|used to be|no longer", re.I)


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")) + [ROOT / "README.md"],
                         ids=lambda p: p.name)
def test_the_guide_says_what_is_not_what_changed(page):
    found = [line for line in page.read_text().splitlines() if HISTORY.search(line)]
    assert not found, f"{page.name}: history in the guide: {found}"


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move the detail into docs/"
