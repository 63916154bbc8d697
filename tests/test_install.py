"""What a user installs: the wheel holds every package and module, and they import from it.

A user who runs ``pip install batchdiff`` (or ``pip install .``) gets the wheel, not this
source tree. These tests check the package list in ``pyproject.toml`` against the packages
on disk, then build the wheel from a copy of the tree, unpack it into a folder of its own,
and import every module of ``batchdiff`` from there, in a process that does not see the
source tree, and run both command lines the README and the guide document.
"""
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _pyproject():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _packages_on_disk():
    """Every package of the distribution, by import name, found from the folders it maps."""
    setuptools_table = _pyproject()["tool"]["setuptools"]
    roots = {"batchdiff": ROOT / "batchdiff", **{
        name: ROOT / folder for name, folder in setuptools_table.get("package-dir", {}).items()}}
    found = set()
    for name, folder in roots.items():
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            if "__pycache__" not in parts:
                found.add(".".join((name, *parts)))
    return found


def _modules_on_disk():
    """Every module of the distribution, by import name, from the folders it maps."""
    modules = set()
    for package in _packages_on_disk():
        folder = _package_folder(package)
        modules.add(package)
        modules.update(f"{package}.{path.stem}" for path in folder.glob("*.py")
                       if path.stem != "__init__")
    return sorted(modules)


def _package_folder(package):
    """The folder on disk that holds ``package``."""
    mapped = _pyproject()["tool"]["setuptools"].get("package-dir", {})
    for name, folder in mapped.items():
        if package == name or package.startswith(name + "."):
            return ROOT / folder / pathlib.Path(*package.split(".")[len(name.split(".")):])
    return ROOT / pathlib.Path(*package.split("."))


def test_every_package_on_disk_is_listed_in_pyproject():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    missing = _packages_on_disk() - listed
    assert not missing, (
        f"packages {sorted(missing)} are on disk but not in [tool.setuptools] packages of "
        "pyproject.toml: a wheel would leave them out")


def test_modules_on_disk_are_found_by_import_name():
    modules = _modules_on_disk()
    for name in ("batchdiff", "batchdiff.api", "batchdiff.fuzz", "batchdiff.fuzz.cli",
                 "batchdiff.kernels", "batchdiff.kernels.plan"):
        assert name in modules
    assert _package_folder("batchdiff.kernels") == ROOT / "kernels"


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory):
    """The wheel built from a copy of the tree, unpacked into a folder: (folder, names)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".asv", ".pytest_cache",
        ".hypothesis", ".venv", "venv"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
                    "--wheel-dir", str(work / "dist"), str(source)],
                   check=True, capture_output=True, text=True)
    wheels = list((work / "dist").glob("batchdiff-*.whl"))
    assert len(wheels) == 1, wheels
    site = work / "site"
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(site)
        names = wheel.namelist()
    return site, names


def _run_from(site, code):
    """Run Python ``code`` with the unpacked wheel ahead of the installed packages.

    An editable install of this tree may still be on the path behind it; ``code`` checks
    where each module came from, so a module missing from the wheel cannot be taken from
    the source tree unnoticed.
    """
    env = dict(os.environ, PYTHONPATH=str(site), PYTHONSAFEPATH="1")
    return subprocess.run([sys.executable, "-c", code], cwd=site, env=env,
                          capture_output=True, text=True, timeout=600)


_FROM_WHEEL = """
import importlib.util, pathlib
def from_wheel(name):
    spec = importlib.util.find_spec(name)
    site = pathlib.Path({site!r}).resolve()
    origin = pathlib.Path(spec.origin).resolve() if spec and spec.origin else None
    assert origin is not None and site in origin.parents, (name, str(origin))
"""


def test_wheel_holds_every_package(unpacked_wheel):
    _, names = unpacked_wheel
    in_wheel = {os.path.dirname(n).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    assert _packages_on_disk() <= in_wheel, sorted(_packages_on_disk() - in_wheel)


def test_every_module_imports_from_the_wheel(unpacked_wheel):
    site, _ = unpacked_wheel
    modules = [m for m in _modules_on_disk() if not m.endswith("__main__")]
    code = _FROM_WHEEL.format(site=str(site)) + (
        f"for name in {modules!r}:\n"
        "    from_wheel(name)\n"
        "    importlib.import_module(name)\n")
    result = _run_from(site, code)
    assert result.returncode == 0, result.stderr
    assert len(modules) > 20


@pytest.mark.parametrize("command", [["batchdiff.fuzz", "--help"],
                                     ["batchdiff", "demo", "--help"]])
def test_documented_commands_run_from_the_wheel(unpacked_wheel, command):
    """``python -m batchdiff.fuzz --help`` and ``python -m batchdiff demo --help``."""
    site, _ = unpacked_wheel
    module, *args = command
    code = _FROM_WHEEL.format(site=str(site)) + (
        "import runpy, sys\n"
        f"from_wheel({module + '.__main__'!r})\n"
        f"sys.argv = [{module!r}, *{args!r}]\n"
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n")
    result = _run_from(site, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m batchdiff"), result.stdout
