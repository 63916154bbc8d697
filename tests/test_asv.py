"""The asv suite imports, and the regression workflow of benchmarks/README.md runs.

Both tests run asv in subprocesses with ``--python=same`` (nothing is built); they are
slow (tens of seconds) and skip where asv is not installed.
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("asv") is None,
                                 reason="asv is not installed (pip install asv)")]


def _asv(*args, cwd=BENCHMARKS, env=None, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "asv", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"asv {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_suite_imports():
    """``asv check``: every benchmark module imports and every benchmark is well formed."""
    out = _asv("check", "--python=same")
    assert "No problems found" in out


def test_compare_two_commits_and_publish(tmp_path):
    """Two result sets under two commit hashes, ``asv compare -f 1.1``, ``asv publish``.

    The same steps as the README's ``--python=same`` workflow, on one fast benchmark,
    with results, HTML and the machine file in ``tmp_path``.
    """
    git = ["git", "-C", BENCHMARKS, "rev-parse"]
    try:
        head, base = (subprocess.run(git + [rev], capture_output=True, text=True, check=True)
                      .stdout.strip() for rev in ("HEAD", "HEAD~1"))
    except subprocess.CalledProcessError:
        pytest.skip("needs a git checkout with at least two commits")
    from asv import util
    conf = util.load_json(os.path.join(BENCHMARKS, "asv.conf.json"), js_comments=True)
    conf.update(repo=os.path.dirname(BENCHMARKS),
                benchmark_dir=os.path.join(BENCHMARKS, "suites"),
                results_dir=str(tmp_path / "results"), html_dir=str(tmp_path / "html"),
                env_dir=str(tmp_path / "env"))
    config = tmp_path / "asv.conf.json"
    config.write_text(json.dumps(conf))
    env = dict(os.environ, HOME=str(tmp_path),           # asv's machine file goes here
               BATCHDIFF_CACHE_DIR=os.environ.get("BATCHDIFF_CACHE_DIR", os.path.expanduser(
                   os.path.join("~", ".cache", "batchdiff"))))
    run = dict(cwd=tmp_path, env=env)
    _asv("machine", "--yes", "--machine", "ci", **run)
    for commit in (base, head):
        _asv("run", "--config", str(config), "--python=same", "--quick", "--machine", "ci",
             f"--set-commit-hash={commit}", "-b", r"bench_phases\.Trace", **run)
    out = _asv("compare", "--config", str(config), "--machine", "ci", "-f", "1.1", "--split",
               base, head, **run)
    assert "bench_phases.Trace.time_trace('rosenbrock_hessian')" in out
    _asv("publish", "--config", str(config), **run)
    assert (tmp_path / "html" / "index.html").exists()
