import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.losses.masked import MaskedTaskLoss, masked_sum_and_count, per_example_loss
from tf_mtml.models.task_spec import TaskSpec

RNG = np.random.default_rng(0)


def _np_bce(y, z):
    p = 1 / (1 + np.exp(-z))
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_binary_loss_matches_closed_form_and_masks_nan():
    y = np.array([1.0, 0.0, np.nan, 1.0], "float32")
    z = RNG.normal(size=(4, 1)).astype("float32")
    loss, mask = per_example_loss(TaskSpec("b", "binary"), y, z)
    np.testing.assert_array_equal(mask, [1, 1, 0, 1])
    keep = mask.numpy() > 0
    np.testing.assert_allclose(loss.numpy()[keep], _np_bce(y[keep], z[keep, 0]), rtol=1e-5)
    assert np.isfinite(loss.numpy()).all()


def test_multiclass_loss_matches_log_softmax_and_masks_negative():
    y = np.array([2, -1, 0], "int32")
    z = RNG.normal(size=(3, 3)).astype("float32")
    loss, mask = per_example_loss(TaskSpec("m", "multiclass", num_classes=3), y, z)
    log_softmax = z - np.log(np.exp(z).sum(-1, keepdims=True))
    np.testing.assert_array_equal(mask, [1, 0, 1])
    np.testing.assert_allclose(loss.numpy()[[0, 2]], -log_softmax[[0, 2], [2, 0]], rtol=1e-5)


@pytest.mark.parametrize("name", ["mse", "mae", "huber"])
def test_regression_losses_on_standardised_labels(name):
    y = np.array([10.0, 12.0, np.nan, 30.0], "float32")
    z = np.array([[0.1], [0.5], [3.0], [-2.0]], "float32")
    mean, std = 11.0, 4.0
    loss, _ = per_example_loss(TaskSpec("r", "regression", loss=name), y, z, mean, std)
    e = z[[0, 1, 3], 0] - (y[[0, 1, 3]] - mean) / std
    expected = {"mse": e**2, "mae": np.abs(e),
                "huber": np.where(np.abs(e) <= 1, 0.5 * e**2, np.abs(e) - 0.5)}[name]
    np.testing.assert_allclose(loss.numpy()[[0, 1, 3]], expected, rtol=1e-5)


def test_missing_labels_get_no_gradient():
    y = np.array([np.nan, 1.0], "float32")
    z = tf.Variable([[5.0], [0.3]])
    with tf.GradientTape() as tape:
        loss, mask = per_example_loss(TaskSpec("b", "binary"), y, z)
        total, count = masked_sum_and_count(loss, mask)
        mean = total / count
    grad = tape.gradient(mean, z).numpy()
    assert grad[0, 0] == 0.0
    np.testing.assert_allclose(grad[1, 0], 1 / (1 + np.exp(-0.3)) - 1.0, rtol=1e-5)


def test_sample_weight_scales_sum_and_count():
    total, count = masked_sum_and_count(np.array([1.0, 2.0, 3.0], "float32"),
                                        np.array([1.0, 0.0, 1.0], "float32"),
                                        np.array([2.0, 5.0, 1.0], "float32"))
    assert float(total) == pytest.approx(5.0) and float(count) == pytest.approx(3.0)


def test_keras_loss_class_averages_over_labelled_and_round_trips():
    loss = MaskedTaskLoss("regression")
    value = loss(np.array([1.0, np.nan, 3.0], "float32"), np.array([[0.0], [9.0], [1.0]]))
    assert float(value) == pytest.approx((1.0 + 4.0) / 2)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, MaskedTaskLoss) and clone.task.type == "regression"
