"""Tests of tf_mtml.layers.cross_stitch."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layers.helpers import (
    assert_config_round_trip,
    assert_keras_file_round_trip,
    fit_briefly,
)
from tf_mtml.layers import CrossStitch, CrossStitchNetwork, TaskTowers

RNG = np.random.default_rng(0)
X = RNG.normal(size=(8, 5)).astype("float32")


@pytest.mark.parametrize(
    "num_tasks, alpha_same, expected",
    [
        (2, 0.9, [[0.9, 0.1], [0.1, 0.9]]),
        (3, 0.7, [[0.7, 0.15, 0.15], [0.15, 0.7, 0.15], [0.15, 0.15, 0.7]]),
        (2, 1.0, [[1.0, 0.0], [0.0, 1.0]]),
    ],
)
def test_alpha_starts_near_identity(num_tasks, alpha_same, expected):
    unit = CrossStitch(num_tasks, alpha_same)
    inputs = [RNG.normal(size=(4, 3)).astype("float32") for _ in range(num_tasks)]
    outputs = unit(inputs)
    np.testing.assert_allclose(np.asarray(unit.alpha), expected, rtol=1e-6)
    for i in range(num_tasks):
        mix = sum(expected[i][j] * inputs[j] for j in range(num_tasks))
        np.testing.assert_allclose(np.asarray(outputs[i]), mix, rtol=1e-5, atol=1e-6)


def test_unit_mixes_any_shape_with_learned_alpha_and_its_gradient():
    unit = CrossStitch(3)
    inputs = [RNG.normal(size=(4, 2, 3)).astype("float32") for _ in range(3)]
    unit.build([x.shape for x in inputs])
    alpha = RNG.normal(size=(3, 3)).astype("float32")
    unit.alpha.assign(alpha)
    weights = [RNG.normal(size=(4, 2, 3)).astype("float32") for _ in range(3)]
    with tf.GradientTape() as tape:
        outputs = unit(inputs)
        objective = sum(tf.reduce_sum(w * o) for w, o in zip(weights, outputs, strict=True))
    for i in range(3):
        mix = sum(alpha[i, j] * inputs[j] for j in range(3))
        np.testing.assert_allclose(np.asarray(outputs[i]), mix, rtol=1e-5, atol=1e-5)
    # d/d alpha_ij of sum_i <w_i, sum_j alpha_ij x_j> = <w_i, x_j>.
    expected = np.array([[np.sum(weights[i] * inputs[j]) for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(tape.gradient(objective, unit.alpha), expected, rtol=1e-5)
    assert unit.task_partitioned_weights == [unit.alpha]  # row i feeds output i only


def _network_numpy(network, x):
    columns = [x.astype("float64")] * network.num_tasks
    for kernel, bias, stitch in zip(network.kernels, network.biases, network.stitches,
                                    strict=True):
        kernel, bias = np.asarray(kernel, "float64"), np.asarray(bias, "float64")
        columns = [np.maximum(h @ kernel[k] + bias[k], 0.0) for k, h in enumerate(columns)]
        alpha = np.asarray(stitch.alpha, "float64")
        columns = [sum(alpha[i, j] * columns[j] for j in range(len(columns)))
                   for i in range(len(columns))]
    return columns


def test_network_matches_numpy_reference():
    network = CrossStitchNetwork(3, (6, 4), alpha_same=0.8)
    network.build((None, 5))
    for w in network.weights:
        w.assign(RNG.normal(scale=0.5, size=w.shape).astype("float32"))
    outputs = network(X)
    assert len(outputs) == 3 and all(o.shape == (8, 4) for o in outputs)
    for out, exp in zip(outputs, _network_numpy(network, X), strict=True):
        np.testing.assert_allclose(np.asarray(out), exp, rtol=1e-5, atol=1e-5)
    assert network.compute_output_shape((None, 5)) == [(None, 4)] * 3


def test_network_columns_start_independent_and_stitches_near_identity():
    network = CrossStitchNetwork(2, (16,), alpha_same=0.9)
    network.build((None, 64))
    kernel = np.asarray(network.kernels[0])
    assert kernel.shape == (2, 64, 16)
    assert not np.allclose(kernel[0], kernel[1])
    # Glorot with the fans of one column's kernel: variance 2 / (64 + 16).
    assert kernel.var() == pytest.approx(2 / 80, rel=0.15)
    np.testing.assert_allclose(np.asarray(network.stitches[0].alpha), [[0.9, 0.1], [0.1, 0.9]])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_tasks": 1}, "num_tasks=1"),
        ({"num_tasks": 0}, "num_tasks=0"),
        ({"alpha_same": 1.5}, "alpha_same=1.5"),
        ({"alpha_same": -0.1}, "alpha_same=-0.1"),
        ({"alpha_same": True}, "alpha_same=True"),
        ({"units": ()}, r"units=\(\)"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    arguments = {"num_tasks": 2, "units": (4,), **kwargs}
    with pytest.raises(ValueError, match=match):
        CrossStitchNetwork(**arguments)
    if "units" not in kwargs:
        with pytest.raises(ValueError, match=match):
            CrossStitch(**{k: v for k, v in arguments.items() if k != "units"})


@pytest.mark.parametrize("input_shape", [[(None, 3)] * 3, [(None, 3), (None, 4)], (None, 3)])
def test_unit_rejects_inputs_that_are_not_one_shape_per_task(input_shape):
    with pytest.raises(ValueError, match="input_shape="):
        CrossStitch(2).build(input_shape)


def test_network_rejects_non_matrix_inputs():
    with pytest.raises(ValueError, match=r"input_shape=\(None, 2, 5\)"):
        CrossStitchNetwork(2, 4).build((None, 2, 5))


def _functional_network(**kwargs):
    inputs = keras.Input((5,))
    network = CrossStitchNetwork(2, (4, 3), **kwargs)
    outputs = TaskTowers({"a": 1, "b": 2}, (3,))(network(inputs))
    return keras.Model(inputs, outputs), network


def test_config_and_keras_file_round_trip(tmp_path):
    model, network = _functional_network(alpha_same=0.6, activation="tanh")
    clone = assert_config_round_trip(network)
    assert clone.units == (4, 3) and clone.alpha_same == 0.6
    assert_config_round_trip(CrossStitch(3, 0.5))
    network.stitches[1].alpha.assign([[0.3, 0.7], [0.2, 0.8]])  # the learned alphas are saved
    assert_keras_file_round_trip(model, X, tmp_path)


def test_alphas_train_and_mixed_precision(mixed_precision):
    model, network = _functional_network()
    history = fit_briefly(model, X, {"a": np.ones((8, 1)), "b": np.zeros((8, 2))})
    assert np.isfinite(history["loss"][0])
    assert not np.allclose(np.asarray(network.stitches[0].alpha), [[0.9, 0.1], [0.1, 0.9]])
    outputs = network(X)
    assert all(o.dtype == "float16" for o in outputs)
    assert network.stitches[0].alpha.dtype == "float32"
