"""Smoke test of bench/contrastive_throughput.py: toy sizes; ours and PyTorch train alike."""

import json
import math

import pytest

pytest.importorskip(
    "torch", reason="the PyTorch peer is not installed; install the `bench` extra (torch==2.13.0)"
)

from bench import contrastive_throughput  # noqa: E402


def test_quick_run_times_every_contender_from_the_same_start():
    report = contrastive_throughput.run_benchmark(contrastive_throughput.QUICK)
    json.dumps(report)
    assert set(report["throughput"]) == {"ours", "ours_xla", "torch", "torch_1_thread"}
    for figures in report["throughput"].values():
        assert all(math.isfinite(v) and v > 0 for v in figures.values())
    # Same initial weights and first batch: the first-step losses agree to float32 round-off,
    # which a different network, loss, temperature or BatchNorm setting would break.
    losses = report["losses"]
    first = losses["ours"]["first_step"]
    for name in ("ours_xla", "torch", "torch_1_thread"):
        assert losses[name]["first_step"] == pytest.approx(first, rel=1e-5)
    # Same optimizer too: after the timed steps they still agree closely.
    assert losses["torch"]["last_step"] == pytest.approx(losses["ours"]["last_step"], rel=1e-3)
    speed = {name: figures["images_per_s"] for name, figures in report["throughput"].items()}
    ratio = max(speed["ours"], speed["ours_xla"]) / max(speed["torch"], speed["torch_1_thread"])
    assert report["ours_vs_torch"] == pytest.approx(ratio)
