"""Smoke test of bench/negative_transfer.py: the whole benchmark at toy size."""

import json

import numpy as np
import pytest

from bench import negative_transfer as bench


@pytest.mark.slow
def test_toy_benchmark_report_is_consistent():
    report = bench.run_benchmark(["mmoe", "soft_sharing"], seeds=[0, 1], correlation=0.5,
                                 train_steps=3)
    json.dumps(report)  # the script prints it as JSON

    assert report["train_steps"] == 3 and report["seeds"] == [0, 1]
    baselines = report["single_task_baselines"]
    assert set(baselines) == {"y1/mse", "y2/mse"}
    for architecture in ("mmoe", "soft_sharing"):
        result = report["architectures"][architecture]
        gains = []
        for metric in ("y1/mse", "y2/mse"):
            multi = np.array(result["multi_task"][metric]["values"])
            single = np.array(baselines[metric]["values"])
            gain = -(multi - single) / single * 100  # lower MSE is better
            np.testing.assert_allclose(result["relative_gain_pct"][metric]["values"], gain)
            assert result["negative_transfer_runs"][metric] == int((gain < 0).sum())
            gains.append(gain)
        delta_m = result["delta_m_pct"]
        np.testing.assert_allclose(delta_m["values"], np.mean(gains, axis=0))
        np.testing.assert_allclose(delta_m["std"], np.std(delta_m["values"], ddof=1))
    # The two seeds are different problems, hence different baselines.
    assert baselines["y1/mse"]["values"][0] != baselines["y1/mse"]["values"][1]
