import math

import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.weighting.diagnostics import GradientDiagnostics, pairwise_cosine, task_pairs


def _grads(flat):
    return [[tf.constant(g[:2], tf.float32), tf.constant(g[2:].reshape(2, 2), tf.float32)]
            for g in flat]


def test_pairwise_cosine_matches_numpy():
    flat = np.random.default_rng(0).normal(size=(3, 6))
    expected = [flat[i] @ flat[j] / np.linalg.norm(flat[i]) / np.linalg.norm(flat[j])
                for i, j in [(0, 1), (0, 2), (1, 2)]]
    np.testing.assert_allclose(pairwise_cosine(_grads(flat)), expected, rtol=1e-5)
    assert task_pairs(["a", "b", "c"]) == [("a", "b"), ("a", "c"), ("b", "c")]


def test_zero_gradient_has_cosine_zero_and_one_task_is_rejected():
    flat = np.array([[1.0, 2, 3, 4, 5, 6], [0.0] * 6])
    np.testing.assert_array_equal(pairwise_cosine(_grads(flat)), [0.0])
    with pytest.raises(ValueError, match="at least 2 tasks. Received 1"):
        pairwise_cosine(_grads(flat[:1]))


def test_metric_means_and_loss_ratio_to_the_first_step():
    metric = GradientDiagnostics(["a", "b"])
    assert all(math.isnan(float(v)) for v in metric.result().values())
    metric.update_state(tf.constant([0.5]), tf.constant([2.0, 4.0]))
    metric.update_state(tf.constant([-0.1]), tf.constant([1.0, 1.0]))
    result = {k: float(v) for k, v in metric.result().items()}
    assert result == pytest.approx({"diagnostics/cos/a__b": 0.2,
                                    "diagnostics/loss_ratio/a": (1 + 0.5) / 2,
                                    "diagnostics/loss_ratio/b": (1 + 0.25) / 2})
    metric.reset_state()  # a new logging period keeps L(0)
    metric.update_state(tf.constant([0.0]), tf.constant([0.5, 2.0]))
    result = {k: float(v) for k, v in metric.result().items()}
    assert result["diagnostics/loss_ratio/a"] == pytest.approx(0.25)
    assert result["diagnostics/loss_ratio/b"] == pytest.approx(0.5)


def test_config_round_trip_and_bad_input():
    metric = GradientDiagnostics(["x", "y", "z"], name="diag")
    clone = GradientDiagnostics.from_config(metric.get_config())
    assert clone.task_names == ("x", "y", "z") and clone.name == "diag"
    assert sorted(clone.result()) == ["diagnostics/cos/x__y", "diagnostics/cos/x__z",
                                      "diagnostics/cos/y__z", "diagnostics/loss_ratio/x",
                                      "diagnostics/loss_ratio/y", "diagnostics/loss_ratio/z"]
    with pytest.raises(ValueError, match=r"at least 2 distinct task names.*\['a', 'a'\]"):
        GradientDiagnostics(["a", "a"])
    with pytest.raises(ValueError, match=r"shape \(3,\).*Received: shape=\(1,\)"):
        metric.update_state(tf.constant([0.0]), tf.constant([1.0]))
