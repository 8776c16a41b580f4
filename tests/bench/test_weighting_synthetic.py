"""Smoke test of bench/weighting_synthetic.py: the whole benchmark at toy size."""

import json

import numpy as np
import pytest

from bench import weighting_synthetic as bench


@pytest.mark.slow
def test_toy_benchmark_report_is_consistent():
    report = bench.run_benchmark(seeds=[0, 1], methods=["static", "pcgrad"], train_steps=8,
                                 steps_per_loop=4)
    json.dumps(report)  # the script prints it as JSON
    assert report["train_steps"] == 8 and report["timed_steps_per_run"] == 4
    static, pcgrad = report["methods"]["static"], report["methods"]["pcgrad"]
    np.testing.assert_allclose(static["step_time_vs_static"]["values"], [1.0, 1.0])
    np.testing.assert_allclose(static["cpu_time_vs_static"]["values"], [1.0, 1.0])
    np.testing.assert_allclose(pcgrad["step_time_vs_static"]["values"],
                               np.divide(pcgrad["ms_per_step"]["values"],
                                         static["ms_per_step"]["values"]), rtol=1e-9)
    np.testing.assert_allclose(pcgrad["test_loss_minus_static"]["values"],
                               np.subtract(pcgrad["test_loss"]["values"],
                                           static["test_loss"]["values"]), rtol=1e-9)
    np.testing.assert_allclose(pcgrad["test_loss_minus_static"]["se"],
                               np.std(pcgrad["test_loss_minus_static"]["values"], ddof=1)
                               / np.sqrt(2))
    assert static["test_loss_minus_static"]["values"] == [0.0, 0.0]
    for method in (static, pcgrad):
        losses = method["test_loss"]
        assert len(losses["values"]) == 2 and all(v > 0 for v in losses["values"])
        assert losses["values"][0] != losses["values"][1]  # two seeds, two problems
        np.testing.assert_allclose(losses["mean"], np.mean(losses["values"]))
        np.testing.assert_allclose(losses["std"], np.std(losses["values"], ddof=1))
        # The test loss is the sum of the two task MSEs.
        np.testing.assert_allclose(losses["mean"], sum(method["task_mse_mean"].values()),
                                   rtol=1e-5)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match=r"must include 'static'.*\['pcgrad'\]"):
        bench.run_benchmark(seeds=[0], methods=["pcgrad"], train_steps=8)
    with pytest.raises(ValueError, match=r"exceed the 4 untimed.*train_steps=4"):
        bench.run_once("static", 0, train_steps=4, steps_per_loop=4)
