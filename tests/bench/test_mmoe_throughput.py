"""Smoke test of bench/mmoe_throughput.py: the whole benchmark at toy size (about 10 s)."""

import dataclasses
import json
import math

import pytest

pytest.importorskip(
    "torch", reason="the PyTorch peer is not installed; install the `bench` extra (torch==2.13.0)"
)

from bench import mmoe_throughput  # noqa: E402


def test_quick_run_reports_every_figure_and_matches_the_torch_peer():
    config = dataclasses.replace(mmoe_throughput.QUICK, loss_steps=30)
    report = mmoe_throughput.run_benchmark(config)
    json.dumps(report)

    # d=16, E=2, experts (8, 4), T=2, towers (4,) -> 1 output per task.
    forward = 2 * 2 * (16 * 8 + 8 * 4) + 2 * 16 * 2 * 2 + 2 * 2 * 2 * 4 + 2 * 2 * (4 * 4 + 4)
    assert report["flops"]["forward_per_example"] == forward
    assert report["flops"]["training_exact_per_example"] == 3 * forward - 2 * 2 * 16 * 8 - 128
    for figures in report["throughput"].values():
        assert all(math.isfinite(v) and v > 0 for v in figures.values())

    # Same init, data and optimizer: the PyTorch peer and the proposed MMoE layout train the
    # same model as ours, so their fp32 losses after 30 steps agree to float32 round-off.
    ours = report["ours"]["final_losses"]["fp32"]
    assert report["torch_final_losses"]["fp32"] == pytest.approx(ours, rel=1e-4)
    assert report["ours_proposed"]["final_losses"]["fp32"] == pytest.approx(ours, rel=1e-4)
    for prefix in ("ours", "ours_proposed"):
        assert set(report[prefix]["targets"]) == set(mmoe_throughput.TARGETS)
