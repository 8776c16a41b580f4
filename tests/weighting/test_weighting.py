import math

import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.models.task_spec import TaskSpec
from tf_mtml.weighting.factory import get_weighting
from tf_mtml.weighting.static import StaticWeighting
from tf_mtml.weighting.uncertainty import UncertaintyWeighting


def _t(losses):
    return {k: tf.constant(v) for k, v in losses.items()}


def test_static_is_the_weighted_sum():
    weighting = StaticWeighting({"a": 2.0, "b": 0.5})
    assert float(weighting(_t({"a": 3.0, "b": 4.0}))) == pytest.approx(8.0)


def test_static_rejects_bad_weights_and_wrong_tasks():
    with pytest.raises(ValueError, match=r"task_weights.*-1.0"):
        StaticWeighting({"a": -1.0})
    with pytest.raises(ValueError, match=r"tasks \['a', 'c'\].*\['a', 'b'\]"):
        StaticWeighting({"a": 1.0, "b": 1.0})(_t({"a": 1.0, "c": 1.0}))


def test_uncertainty_closed_form_value_and_gradient():
    weighting = UncertaintyWeighting({"r": "regression", "c": "binary"})
    s = np.array([0.3, -0.7], "float32")
    weighting.log_variance.assign(s)
    losses = {"r": 2.0, "c": 0.5}
    with tf.GradientTape() as tape:
        total = weighting(_t(losses))
    grad = tape.gradient(total, weighting.log_variance.value).numpy()
    expected = 0.5 * math.exp(-s[0]) * 2.0 + 0.5 * s[0] + math.exp(-s[1]) * 0.5 + 0.5 * s[1]
    assert float(total) == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(grad, [-0.5 * math.exp(-s[0]) * 2.0 + 0.5,
                                      -math.exp(-s[1]) * 0.5 + 0.5], rtol=1e-5)


def test_uncertainty_learns_log_of_regression_loss():
    # For a fixed regression loss L, 0.5 e^{-s} L + 0.5 s is minimised at s = log L.
    weighting = UncertaintyWeighting({"r": "regression"})
    optimizer = tf.keras.optimizers.SGD(0.5)
    for _ in range(300):
        with tf.GradientTape() as tape:
            total = weighting(_t({"r": 4.0}))
        optimizer.apply_gradients([(tape.gradient(total, weighting.log_variance.value),
                                    weighting.log_variance)])
    assert float(weighting.log_variance[0]) == pytest.approx(math.log(4.0), abs=1e-3)
    assert weighting.effective_weights()["r"] == pytest.approx(0.5 / 4.0, rel=1e-3)


def test_uncertainty_splits_regulariser_over_replicas():
    weighting = UncertaintyWeighting({"r": "regression"}, initial_log_variance=1.0)
    one = float(weighting(_t({"r": 0.0}), num_replicas=1))
    two = float(weighting(_t({"r": 0.0}), num_replicas=2))
    assert one == pytest.approx(0.5) and two == pytest.approx(0.25)


def test_factory_and_config_round_trip():
    tasks = [TaskSpec("a", "binary", weight=3.0), TaskSpec("b", "regression")]
    static = get_weighting("static", tasks)
    assert static.effective_weights() == {"a": 3.0, "b": 1.0}
    clone = UncertaintyWeighting.from_config(get_weighting("uncertainty", tasks).get_config())
    assert clone.task_types == {"a": "binary", "b": "regression"}
    with pytest.raises(ValueError, match=r"weighting.*'gradnrom'"):
        get_weighting("gradnrom", tasks)
