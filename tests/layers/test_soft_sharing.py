"""Tests of tf_mtml.layers.soft_sharing."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layers.helpers import (
    assert_config_round_trip,
    assert_keras_file_round_trip,
    fit_briefly,
)
from tf_mtml.layers import PairwiseL2, SoftSharing, TaskTowers
from tf_mtml.models.multitask_model import MultiTaskModel

RNG = np.random.default_rng(0)
X = RNG.normal(size=(8, 5)).astype("float32")


def _randomized(layer):
    layer.build((None, 5))
    for w in layer.weights:
        w.assign(RNG.normal(scale=0.5, size=w.shape).astype("float32"))
    return layer


def _columns(layer):
    """Every column's parameters as one float64 vector: `(num_tasks, num_params)`."""
    weights = [np.asarray(w, "float64").reshape(layer.num_tasks, -1)
               for w in (*layer.kernels, *layer.biases)]
    return np.concatenate(weights, axis=1)


def _pairwise_penalty(theta):
    return sum(np.sum((theta[i] - theta[j]) ** 2)
               for i, j in itertools.combinations(range(len(theta)), 2))


def test_columns_match_numpy_reference():
    layer = _randomized(SoftSharing(3, (6, 4), l2=0.0))
    outputs = layer(X)
    assert len(outputs) == 3 and all(o.shape == (8, 4) for o in outputs)
    for k, out in enumerate(outputs):
        h = X.astype("float64")
        for kernel, bias in zip(layer.kernels, layer.biases, strict=True):
            h = np.maximum(h @ np.asarray(kernel, "float64")[k] + np.asarray(bias)[k], 0.0)
        np.testing.assert_allclose(np.asarray(out), h, rtol=1e-5, atol=1e-5)
    assert layer.compute_output_shape((None, 5)) == [(None, 4)] * 3
    assert layer.losses == []  # l2=0: independent columns, nothing added
    assert layer.task_partitioned_weights == [*layer.kernels, *layer.biases]
    with tf.GradientTape() as tape:
        first = tf.reduce_sum(layer(X)[0])
    for gradient in tape.gradient(first, layer.task_partitioned_weights):
        np.testing.assert_array_equal(np.asarray(gradient)[1:], 0.0)  # other columns


@pytest.mark.parametrize("num_tasks", [1, 2, 4])
def test_penalty_is_the_pairwise_closed_form_and_in_the_losses(num_tasks):
    layer = _randomized(SoftSharing(num_tasks, (3, 2), l2=0.25))
    expected = _pairwise_penalty(_columns(layer))
    np.testing.assert_allclose(float(layer.penalty()), expected, rtol=1e-5)
    assert len(layer.losses) == 4  # one regularization loss per stacked weight
    np.testing.assert_allclose(float(sum(layer.losses)), 0.25 * expected, rtol=1e-5)
    layer(X)  # calls add nothing: the losses are read from the weights
    assert len(layer.losses) == 4


def test_pairwise_regularizer_closed_form_and_config():
    stacked = RNG.normal(size=(3, 2, 4)).astype("float32")
    expected = 0.5 * _pairwise_penalty(stacked.reshape(3, -1).astype("float64"))
    np.testing.assert_allclose(float(PairwiseL2(0.5)(stacked)), expected, rtol=1e-5)
    regularizer = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(PairwiseL2(0.5)))
    assert isinstance(regularizer, PairwiseL2) and regularizer.l2 == 0.5


def test_penalty_gradient_is_the_closed_form():
    layer = _randomized(SoftSharing(3, (4,), l2=0.5))
    with tf.GradientTape() as tape:
        penalty = sum(layer.losses)
    variables = [*layer.kernels, *layer.biases]
    gradients = tape.gradient(penalty, variables)
    for variable, gradient in zip(variables, gradients, strict=True):
        theta = np.asarray(variable, "float64")
        # d/d theta_i of l2 * sum_{i<j} ||theta_i - theta_j||^2 = 2 l2 sum_j (theta_i - theta_j)
        expected = np.stack([2 * 0.5 * sum(theta[i] - theta[j] for j in range(3))
                             for i in range(3)])
        np.testing.assert_allclose(np.asarray(gradient), expected, rtol=1e-5, atol=1e-6)


def test_identical_columns_have_zero_penalty():
    layer = SoftSharing(3, (4, 2), l2=1.0)
    layer.build((None, 5))
    for w in layer.weights:
        w.assign(np.broadcast_to(RNG.normal(size=w.shape[1:]), w.shape).astype("float32"))
    assert float(layer.penalty()) == pytest.approx(0.0, abs=1e-9)  # mean of 3 rounds
    outputs = [np.asarray(o) for o in layer(X)]
    np.testing.assert_array_equal(outputs[0], outputs[2])


def test_multitask_model_loss_includes_the_penalty():
    inputs = keras.Input((5,))
    columns = SoftSharing(2, (4,), l2=0.1, name="columns")
    network = keras.Model(inputs, TaskTowers({"a": 1, "b": 1})(columns(inputs)))
    model = MultiTaskModel(network, [{"name": "a", "type": "regression"},
                                     {"name": "b", "type": "regression"}])
    y = {"a": RNG.normal(size=(8,)).astype("float32"), "b": RNG.normal(size=(8,)).astype(
        "float32")}
    y_pred = model(X, training=True)
    total = float(model.compute_loss(X, y, y_pred))
    mse = sum(np.mean((np.asarray(y_pred[t])[:, 0] - y[t]) ** 2) for t in ("a", "b"))
    penalty = 0.1 * _pairwise_penalty(_columns(columns))
    assert penalty > 0.0
    np.testing.assert_allclose(total, mse + penalty, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_tasks": 0}, "num_tasks=0"),
        ({"units": ()}, r"units=\(\)"),
        ({"l2": -1.0}, "l2=-1.0"),
        ({"l2": float("inf")}, "l2=inf"),
        ({"l2": True}, "l2=True"),
        ({"l2": "0.1"}, "l2='0.1'"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SoftSharing(**{"num_tasks": 2, "units": (4,), **kwargs})
    if "l2" in kwargs:
        with pytest.raises(ValueError, match=match):
            PairwiseL2(kwargs["l2"])


def test_invalid_input_shape_raises():
    with pytest.raises(ValueError, match=r"input_shape=\(None, 2, 5\)"):
        SoftSharing(2, 4).build((None, 2, 5))


def _functional(**kwargs):
    inputs = keras.Input((5,))
    layer = SoftSharing(2, (4, 3), **kwargs)
    return keras.Model(inputs, TaskTowers({"a": 1, "b": 2}, (3,))(layer(inputs))), layer


def test_config_and_keras_file_round_trip(tmp_path):
    model, layer = _functional(l2=0.3, activation="tanh")
    clone = assert_config_round_trip(layer)
    assert clone.l2 == 0.3 and clone.units == (4, 3)
    assert_keras_file_round_trip(model, X, tmp_path)


def test_fit_pulls_columns_together_and_mixed_precision(mixed_precision):
    model, layer = _functional(l2=1.0)
    before = float(layer.penalty())
    fit_briefly(model, X, {"a": np.ones((8, 1)), "b": np.ones((8, 2))})
    # An SGD(0.1) step scales every deviation from the mean column by 1 - 0.1 * 2 * l2 * T
    # = 0.6: the penalty dominates the task gradients' pull.
    assert float(layer.penalty()) < 0.5 * before
    assert all(o.dtype == "float16" for o in layer(X))
    assert layer.kernels[0].dtype == "float32" and layer.penalty().dtype == "float32"
    assert all(loss.dtype == "float32" for loss in model.losses)
    np.testing.assert_allclose(float(sum(model.losses)), _pairwise_penalty(_columns(layer)),
                               rtol=1e-5)
