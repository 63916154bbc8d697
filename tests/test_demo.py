"""The demo: every built-in problem agrees with its hand-written derivative."""
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from batchdiff import demo


def test_demo_main_passes_every_problem(capsys):
    assert demo.main(["--points", "64"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.endswith((" OK", " FAIL"))]
    assert len(rows) == len(demo.problems())
    assert all(row.endswith(" OK") for row in rows)


def test_command_line_demo_exits_zero():
    run = subprocess.run([sys.executable, "-m", "batchdiff", "demo", "--points", "32"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "FAIL" not in run.stdout


def test_command_line_without_command_prints_usage():
    run = subprocess.run([sys.executable, "-m", "batchdiff"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode != 0
    assert "usage: python -m batchdiff" in run.stdout + run.stderr


@pytest.mark.parametrize("problem", demo.problems(),
                         ids=lambda p: f"{p.name}-{p.transform.__name__}")
def test_wrong_oracle_is_reported_as_fail(problem):
    wrong = dataclasses.replace(problem, oracle=lambda X: problem.oracle(X) * (1 + 1e-6))
    report = demo.run_problem(wrong, points=16)
    assert not report.check.ok
    assert demo.format_report(report).endswith("FAIL")


def test_check_fails_on_nan_and_on_shape_mismatch():
    want = np.ones((4, 3))
    assert demo.check(want, want).ok
    assert not demo.check(np.where(np.eye(4, 3) > 0, np.nan, want), want).ok
    assert not demo.check(want[:, :2], want).ok


def test_main_exits_one_when_a_check_fails(monkeypatch, capsys):
    p = demo.problems()[0]
    broken = [dataclasses.replace(p, oracle=lambda X: p.oracle(X) + 1.0)]
    monkeypatch.setattr(demo, "problems", lambda: broken)
    assert demo.main(["--points", "8"]) == 1
    assert "FAIL" in capsys.readouterr().out
