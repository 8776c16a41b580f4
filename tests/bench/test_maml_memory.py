"""Smoke test of bench/maml_memory.py: one subprocess measurement at toy size, the orchestration
and the summary."""

import dataclasses
import json

import numpy as np
import pytest

from bench import maml_memory

QUICK_NO_BFC = dataclasses.replace(maml_memory.QUICK, tf_allocator_stats=False)


@pytest.mark.slow
def test_child_process_matches_the_same_step_run_here(tmp_path):
    path = str(tmp_path / "child.npz")
    child = maml_memory.run_child(maml_memory.QUICK, 1, True, path)
    json.dumps(child)
    assert (child["inner_steps"], child["recompute"]) == (1, True)
    assert child["rss_after_build_mb"] > 0 and child["peak_mb"] >= child["step_mb"] >= 0
    assert child["trace_mb"] >= 0 and child["step_s"] > 0
    assert child["tf_allocator_peak_mb"] > 0  # The child runs on TF's BFC allocator.

    # Without recompute, in this process: same seed and episode, so the same loss and the same
    # meta-gradient (conv4_classifier: 4 blocks of kernel, bias, gamma, beta; then the head).
    here = maml_memory.measure_configuration(QUICK_NO_BFC, 1, False, str(tmp_path / "here.npz"))
    assert "tf_allocator_peak_mb" not in here
    assert child["loss"] == pytest.approx(here["loss"], rel=1e-6)
    with np.load(path) as recomputed, np.load(tmp_path / "here.npz") as plain:
        assert len(recomputed.files) == len(plain.files) == 4 * 4 + 2
        assert maml_memory.rel_diff([recomputed[k] for k in recomputed.files],
                                    [plain[k] for k in plain.files]) < 1e-5


def test_run_benchmark_compares_the_gradients_the_children_save(monkeypatch):
    def fake_child(config, inner_steps, recompute, grads_path):
        grads = [np.full((2, 2), float(inner_steps)), np.ones(3)]
        if recompute and inner_steps == 2:
            grads[1] = grads[1] * 1.01
        np.savez(grads_path, *grads)
        return {"inner_steps": inner_steps, "recompute": recompute,
                "peak_mb": 10.0 * inner_steps / (1 + recompute), "step_mb": 5.0 * inner_steps}

    monkeypatch.setattr(maml_memory, "run_child", fake_child)
    config = maml_memory.MemoryConfig(inner_steps=(1, 2, 4))
    report = maml_memory.run_benchmark(config)
    json.dumps(report)
    assert [(r["inner_steps"], r["recompute"]) for r in report["measurements"]] == [
        (1, False), (1, True), (2, False), (2, True), (4, False), (4, True)]
    # |(0, 0, 0, 0, .01, .01, .01)| / |(2, 2, 2, 2, 1, 1, 1)| for 2 inner steps.
    expected = np.sqrt(3 * 0.01**2) / np.sqrt(4 * 4 + 3)
    assert report["meta_gradient_rel_diff"] == {"1": 0.0, "2": pytest.approx(expected),
                                                "4": 0.0}
    assert not report["same_meta_gradient"]
    assert report["slopes"]["recompute_false"]["peak_mb_per_inner_step"] == pytest.approx(10.0)
    assert report["slopes"]["recompute_true"]["peak_mb_per_inner_step"] == pytest.approx(5.0)
    assert report["recompute_reduces_peak_mb_slope"]


def test_summary_slopes_are_least_squares_and_the_gradient_check_can_fail():
    rows = []
    for steps in (1, 2, 4, 8):
        rows.append({"inner_steps": steps, "recompute": False, "peak_mb": 100.0 + 30.0 * steps,
                     "step_mb": 90.0 + 30.0 * steps})
        rows.append({"inner_steps": steps, "recompute": True, "peak_mb": 100.0 + 6.0 * steps,
                     "step_mb": 90.0 + 6.0 * steps + (1.0 if steps == 2 else 0.0)})
    summary = maml_memory.summarize(rows, {1: 0.0, 2: 1e-7})
    assert summary["slopes"]["recompute_false"]["peak_mb_per_inner_step"] == pytest.approx(30.0)
    assert summary["slopes"]["recompute_true"]["peak_mb_per_inner_step"] == pytest.approx(6.0)
    # Least squares on x = (1, 2, 4, 8): a +1 at x = 2 moves the slope by (2 - 3.75) / 28.75.
    assert summary["slopes"]["recompute_true"]["step_mb_per_inner_step"] == pytest.approx(
        6.0 + (2 - 3.75) / np.sum((np.array([1, 2, 4, 8]) - 3.75) ** 2))
    assert summary["slope_ratio_recompute_over_plain"]["peak_mb_per_inner_step"] == (
        pytest.approx(0.2))
    assert summary["recompute_reduces_peak_mb_slope"] and summary["same_meta_gradient"]
    assert not maml_memory.summarize(rows, {1: 0.0, 2: 1e-2})["same_meta_gradient"]


@pytest.mark.slow
def test_a_failing_child_raises_with_its_error(tmp_path):
    config = dataclasses.replace(maml_memory.QUICK, meta_batch_mode="pmap")
    with pytest.raises(RuntimeError, match=r"inner_steps=1, recompute=False failed(.|\n)*pmap"):
        maml_memory.run_child(config, 1, False, str(tmp_path / "grads.npz"))
