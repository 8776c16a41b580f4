import numpy as np
import pytest

from tf_mtml.meta.metrics import Z_95, MeanWithConfidence


def test_mean_and_interval_match_numpy_over_streamed_updates():
    values = np.random.default_rng(0).uniform(size=1000)
    metric = MeanWithConfidence(name="accuracy")
    for chunk in np.split(values, 8):
        metric.update_state(chunk)
    result = {k: float(v) for k, v in metric.result().items()}
    expected_ci = Z_95 * values.std(ddof=1) / np.sqrt(values.size)
    assert result["accuracy"] == pytest.approx(values.mean(), rel=1e-6)
    assert result["accuracy_ci95"] == pytest.approx(expected_ci, rel=1e-5)


def test_high_mean_low_variance_does_not_cancel():
    # Accuracies near 1 with tiny spread: a float32 sum of squares would lose the variance.
    values = 0.99 + 1e-4 * np.random.default_rng(1).standard_normal(5000)
    metric = MeanWithConfidence(name="accuracy")
    metric.update_state(values)
    expected_ci = Z_95 * values.std(ddof=1) / np.sqrt(values.size)
    assert float(metric.result()["accuracy_ci95"]) == pytest.approx(expected_ci, rel=1e-3)


def test_reset_and_empty():
    metric = MeanWithConfidence(name="mse")
    metric.update_state([1.0, 3.0])
    metric.reset_state()
    result = metric.result()
    assert float(result["mse"]) == 0.0 and float(result["mse_ci95"]) == 0.0


def test_sample_weight_is_rejected():
    with pytest.raises(ValueError, match="sample_weight"):
        MeanWithConfidence().update_state([1.0], sample_weight=[2.0])
