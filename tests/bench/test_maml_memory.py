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
        # One inner step of a toy model: float32 round-off only (see float64_meta_gradients).
        assert maml_memory.rel_diff([recomputed[k] for k in recomputed.files],
                                    [plain[k] for k in plain.files]) < 1e-5


def test_run_benchmark_compares_the_gradients_in_float32_and_float64(monkeypatch):
    def fake_child(config, inner_steps, recompute, grads_path):
        grads = [np.full((2, 2), float(inner_steps)), np.ones(3)]
        if recompute and inner_steps == 2:
            grads[1] = grads[1] * 1.01
        np.savez(grads_path, *grads)
        return {"inner_steps": inner_steps, "recompute": recompute,
                "peak_mb": 10.0 * inner_steps / (1 + recompute), "step_mb": 5.0 * inner_steps}

    def fake_float64(config, inner_steps, recompute):
        return [np.ones(2) + (1e-6 if recompute and inner_steps == 4 else 0.0)]

    monkeypatch.setattr(maml_memory, "run_child", fake_child)
    monkeypatch.setattr(maml_memory, "float64_meta_gradients", fake_float64)
    report = maml_memory.run_benchmark(maml_memory.MemoryConfig(inner_steps=(1, 2, 4)))
    json.dumps(report)
    assert [(r["inner_steps"], r["recompute"]) for r in report["measurements"]] == [
        (1, False), (1, True), (2, False), (2, True), (4, False), (4, True)]
    check = report["meta_gradient_check"]
    # |(0, 0, 0, 0, .01, .01, .01)| / |(2, 2, 2, 2, 1, 1, 1)| for 2 inner steps.
    assert check["float32_rel_diff"] == {
        "1": 0.0, "2": pytest.approx(np.sqrt(3 * 0.01**2) / np.sqrt(4 * 4 + 3)), "4": 0.0}
    assert check["float64_rel_diff"] == {"1": 0.0, "2": 0.0, "4": pytest.approx(1e-6)}
    assert not check["same_meta_gradient"]  # Decided by float64 only: 1e-6 > 1e-9.
    assert report["slopes"]["recompute_false"]["peak_mb_per_inner_step"] == pytest.approx(10.0)
    assert report["slopes"]["recompute_true"]["peak_mb_per_inner_step"] == pytest.approx(5.0)
    assert report["recompute_reduces_peak_mb_slope"]


def test_float64_meta_gradients_agree_with_recompute():
    plain, recomputed = (maml_memory.float64_meta_gradients(maml_memory.QUICK, 2, recompute)
                         for recompute in (False, True))
    assert len(plain) == 4 * 4 + 2 and all(g.dtype == np.float64 for g in plain)
    assert maml_memory.rel_diff(recomputed, plain) <= maml_memory.FLOAT64_TOLERANCE


def test_summary_slopes_are_least_squares():
    rows = []
    for steps in (1, 2, 4, 8):
        rows.append({"inner_steps": steps, "recompute": False, "peak_mb": 100.0 + 30.0 * steps,
                     "step_mb": 90.0 + 30.0 * steps})
        rows.append({"inner_steps": steps, "recompute": True, "peak_mb": 100.0 + 6.0 * steps,
                     "step_mb": 90.0 + 6.0 * steps + (1.0 if steps == 2 else 0.0)})
    summary = maml_memory.summarize(rows)
    assert summary["slopes"]["recompute_false"]["peak_mb_per_inner_step"] == pytest.approx(30.0)
    assert summary["slopes"]["recompute_true"]["peak_mb_per_inner_step"] == pytest.approx(6.0)
    # Least squares on x = (1, 2, 4, 8): a +1 at x = 2 moves the slope by (2 - 3.75) / 28.75.
    assert summary["slopes"]["recompute_true"]["step_mb_per_inner_step"] == pytest.approx(
        6.0 + (2 - 3.75) / np.sum((np.array([1, 2, 4, 8]) - 3.75) ** 2))
    assert summary["slope_ratio_recompute_over_plain"]["peak_mb_per_inner_step"] == (
        pytest.approx(0.2))
    assert summary["recompute_reduces_peak_mb_slope"]
    rows = [{**r, "peak_mb": 100.0 + (40.0 if r["recompute"] else 30.0) * r["inner_steps"]}
            for r in rows]
    assert not maml_memory.summarize(rows)["recompute_reduces_peak_mb_slope"]


@pytest.mark.slow
def test_a_failing_child_raises_with_its_error(tmp_path):
    config = dataclasses.replace(maml_memory.QUICK, meta_batch_mode="pmap")
    with pytest.raises(RuntimeError, match=r"inner_steps=1, recompute=False failed(.|\n)*pmap"):
        maml_memory.run_child(config, 1, False, str(tmp_path / "grads.npz"))
