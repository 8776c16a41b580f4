"""Smoke run of bench/kill9_checkpoints.py: two kills (one inside a checkpoint write)."""

import pytest

from bench.kill9_checkpoints import run_benchmark


@pytest.mark.slow
def test_hard_kills_leave_restorable_checkpoints():
    report = run_benchmark(trials=3, seed=1)
    assert report["restorable"] == 3, report["results"]
    assert [r["during_write"] for r in report["results"]] == [False, True, False]
    assert report["leftovers_not_removed"] == 0
    for result in report["results"]:
        assert result["restored_step"] > result["step_before"]
