import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.weighting.dwa import DynamicWeightAverage, dwa_weights


def _numpy_dwa(previous, before, temperature):
    r = np.asarray(previous) / np.asarray(before)
    e = np.exp(r / temperature)
    return len(r) * e / e.sum()


def test_weights_from_loss_history():
    previous, before = [0.9, 0.5, 2.0], [1.0, 1.0, 1.0]
    np.testing.assert_allclose(dwa_weights(previous, before, 2.0),
                               _numpy_dwa(previous, before, 2.0), rtol=1e-6)
    # The slowest-falling task gets the largest weight; a huge T gives uniform weights.
    assert np.argmax(dwa_weights(previous, before, 2.0)) == 2
    np.testing.assert_allclose(dwa_weights(previous, before, 1e6), [1.0, 1.0, 1.0], rtol=1e-5)
    np.testing.assert_allclose(dwa_weights([1.0, 2.0], [0.0, 1.0], 1.0),
                               _numpy_dwa([1.0, 2.0], [1.0, 1.0], 1.0), rtol=1e-6)


def test_layer_averages_periods_and_waits_for_two():
    layer = DynamicWeightAverage({"a": 1.0, "b": 3.0}, temperature=2.0, period_steps=2)
    steps = np.array([[4.0, 2.0], [2.0, 2.0],   # period 1: means (3, 2)
                      [3.0, 1.0], [1.0, 1.0],   # period 2: means (2, 1)
                      [1.0, 1.0], [1.0, 0.6]])  # period 3: means (1, 0.8)
    after_2 = _numpy_dwa([2.0, 1.0], [3.0, 2.0], 2.0)  # L(2) / L(1)
    after_3 = _numpy_dwa([1.0, 0.8], [2.0, 1.0], 2.0)  # L(3) / L(2)
    expected = [[1, 1], [1, 1], [1, 1], after_2, after_2, after_3]
    for losses, weights in zip(steps, expected, strict=True):
        layer.update_weights(tf.constant(losses, tf.float32))
        np.testing.assert_allclose(layer.loss_weights.numpy(), weights, rtol=1e-6)
    w = layer.loss_weights.numpy()
    total = layer({"a": tf.constant(2.0), "b": tf.constant(1.0)})
    assert float(total) == pytest.approx(w[0] * 2.0 + w[1] * 3.0 * 1.0, rel=1e-6)
    assert layer.effective_weights() == pytest.approx({"a": w[0], "b": 3 * w[1]})


def test_config_round_trip_and_bad_values():
    layer = DynamicWeightAverage({"a": 1.0, "b": 1.0}, temperature=3.0, period_steps=7)
    clone = DynamicWeightAverage.from_config(layer.get_config())
    assert (clone.temperature, clone.period_steps) == (3.0, 7)
    with pytest.raises(ValueError, match=r"`temperature`.*Received: temperature=0"):
        DynamicWeightAverage({"a": 1.0}, temperature=0)
    with pytest.raises(ValueError, match=r"`period_steps`.*positive integer.*=1.5"):
        DynamicWeightAverage({"a": 1.0}, period_steps=1.5)
    with pytest.raises(ValueError, match=r"tasks \['a', 'c'\].*\['a', 'b'\]"):
        layer({"a": tf.constant(1.0), "c": tf.constant(1.0)})
