"""Tests of tf_mtml.layers.conditioning."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layers.helpers import (
    assert_config_round_trip,
    assert_keras_file_round_trip,
    fit_briefly,
)
from tf_mtml.layers import (
    AdditiveConditioning,
    ConcatConditioning,
    FiLM,
    MultiplicativeGating,
)

RNG = np.random.default_rng(0)
H = RNG.normal(size=(4, 6)).astype("float32")
Z = np.eye(3, dtype="float32")[[0, 1, 2, 1]]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _randomize(layer):
    for w in layer.weights:
        w.assign(RNG.normal(size=w.shape).astype("float32"))


def test_concat():
    np.testing.assert_array_equal(np.asarray(ConcatConditioning()([H, Z])), np.hstack([H, Z]))


def test_concat_broadcasts_over_feature_maps():
    h = RNG.normal(size=(4, 2, 5, 6)).astype("float32")
    out = np.asarray(ConcatConditioning()([h, Z]))
    assert out.shape == (4, 2, 5, 9)
    np.testing.assert_array_equal(out[..., 6:], np.broadcast_to(Z[:, None, None], (4, 2, 5, 3)))


@pytest.mark.parametrize("use_bias", [False, True])
def test_additive(use_bias):
    layer = AdditiveConditioning(use_bias=use_bias)
    layer.build([H.shape, Z.shape])
    _randomize(layer)
    weights = [np.asarray(w) for w in layer.projection.weights]
    assert len(weights) == (2 if use_bias else 1)
    expected = H + Z @ weights[0] + (weights[1] if use_bias else 0.0)
    np.testing.assert_allclose(np.asarray(layer([H, Z])), expected, rtol=1e-5, atol=1e-6)


def test_film_is_identity_at_init_then_gamma_h_plus_beta():
    layer = FiLM()
    np.testing.assert_array_equal(np.asarray(layer([H, Z])), H)
    _randomize(layer)
    wg, bg = (np.asarray(w) for w in layer.gamma.weights)
    wb, bb = (np.asarray(w) for w in layer.beta.weights)
    expected = (1.0 + Z @ wg + bg) * H + Z @ wb + bb
    np.testing.assert_allclose(np.asarray(layer([H, Z])), expected, rtol=1e-5, atol=1e-5)


def test_film_broadcasts_over_feature_maps():
    h = RNG.normal(size=(4, 2, 5, 6)).astype("float32")
    layer = FiLM()
    layer.build([h.shape, Z.shape])
    _randomize(layer)
    wg, bg = (np.asarray(w) for w in layer.gamma.weights)
    wb, bb = (np.asarray(w) for w in layer.beta.weights)
    gamma, beta = (1.0 + Z @ wg + bg)[:, None, None], (Z @ wb + bb)[:, None, None]
    np.testing.assert_allclose(np.asarray(layer([h, Z])), gamma * h + beta, rtol=1e-5, atol=1e-5)


def test_soft_gating():
    layer = MultiplicativeGating("soft")
    layer.build([H.shape, Z.shape])
    _randomize(layer)
    kernel, bias = (np.asarray(w) for w in layer.gate.weights)
    expected = H * _sigmoid(Z @ kernel + bias)
    np.testing.assert_allclose(np.asarray(layer([H, Z])), expected, rtol=1e-5, atol=1e-6)


def test_hard_gating_assigns_contiguous_blocks():
    layer = MultiplicativeGating("hard", num_tasks=3)
    h = np.ones((3, 7), "float32")
    masks = np.asarray(layer([h, np.eye(3, dtype="float32")]))
    owner = np.arange(7) * 3 // 7  # [0, 0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(masks, (owner[None] == np.arange(3)[:, None]).astype("float32"))
    assert not layer.weights


def _stacked_hard_network(num_tasks=2, units=6):
    """Dense -> hard gating -> Dense -> hard gating -> Dense(1): per-task sub-networks."""
    x = keras.Input((4,))
    z = keras.Input((num_tasks,))
    dense1, dense2 = keras.layers.Dense(units), keras.layers.Dense(units)
    h = MultiplicativeGating("hard", num_tasks=num_tasks)([dense1(x), z])
    h = MultiplicativeGating("hard", num_tasks=num_tasks)([dense2(h), z])
    return keras.Model([x, z], keras.layers.Dense(1)(h)), dense1, dense2


def test_hard_gating_isolates_tasks():
    model, dense1, dense2 = _stacked_hard_network()
    x = RNG.normal(size=(5, 4)).astype("float32")
    z = np.tile(np.array([[1.0, 0.0]], "float32"), (5, 1))  # every example is task 0
    task1_units = slice(3, 6)  # units 3..5 of 6 belong to task 1
    watched = [dense1.kernel, dense1.bias, dense2.kernel, dense2.bias]
    with tf.GradientTape() as tape:
        out = model([x, z])
        loss = tf.reduce_sum(out**2)
    grads = tape.gradient(loss, watched)
    out = out.numpy()
    for grad in grads:
        np.testing.assert_array_equal(np.asarray(grad)[..., task1_units], 0.0)
        assert np.any(np.asarray(grad)[..., :3] != 0.0)  # task 0's weights do get gradient
    # Task 1's incoming weights (columns) and, in layer 2, task 1's rows do not matter.
    for dense in (dense1, dense2):
        kernel = np.array(dense.kernel.numpy())
        kernel[:, task1_units] += 10.0
        dense.kernel.assign(kernel)
        dense.bias.assign(dense.bias.numpy() + np.r_[0, 0, 0, 10, 10, 10].astype("float32"))
    kernel2 = np.array(dense2.kernel.numpy())
    kernel2[task1_units, :3] -= 10.0
    dense2.kernel.assign(kernel2)
    np.testing.assert_array_equal(np.asarray(model([x, z])), out)
    # Changing task 0's weights does change the output (the check above can fail).
    dense1.kernel.assign(dense1.kernel.numpy() + 1.0)
    assert not np.allclose(np.asarray(model([x, z])), out)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"gate_type": "binary"}, "gate_type='binary'"),
        ({"gate_type": "hard"}, "num_tasks=None"),
        ({"gate_type": "hard", "num_tasks": 0}, "num_tasks=0"),
        ({"gate_type": "soft", "num_tasks": 2}, "num_tasks=2"),
    ],
)
def test_gating_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiplicativeGating(**kwargs)


def test_hard_gating_invalid_shapes_raise():
    with pytest.raises(ValueError, match=r"z.shape=\(None, 2\)"):
        MultiplicativeGating("hard", num_tasks=3).build([(None, 6), (None, 2)])
    with pytest.raises(ValueError, match=r"h.shape=\(None, 2\)"):
        MultiplicativeGating("hard", num_tasks=3).build([(None, 2), (None, 3)])


@pytest.mark.parametrize("layer_cls", [ConcatConditioning, AdditiveConditioning, FiLM])
def test_invalid_inputs_raise(layer_cls):
    with pytest.raises(ValueError, match=r"z.shape=\(None, 2, 3\)"):
        layer_cls().build([(None, 6), (None, 2, 3)])
    with pytest.raises(ValueError, match="list `\\[h, z\\]`"):
        layer_cls().build([(None, 6)])


def _all_layers():
    return [
        ConcatConditioning(),
        AdditiveConditioning(use_bias=True),
        FiLM(),
        MultiplicativeGating("soft"),
        MultiplicativeGating("hard", num_tasks=3),
    ]


def _functional(layer):
    h, z = keras.Input((6,)), keras.Input((3,))
    return keras.Model([h, z], keras.layers.Dense(2)(layer([keras.layers.Dense(6)(h), z])))


@pytest.mark.parametrize("index", range(5))
def test_config_and_keras_file_round_trip(index, tmp_path):
    layer = _all_layers()[index]
    assert_config_round_trip(layer)
    model = _functional(layer)
    for w in layer.weights:  # FiLM starts at zero: make the check meaningful
        w.assign(RNG.normal(size=w.shape).astype("float32"))
    assert_keras_file_round_trip(model, [H, Z], tmp_path)


@pytest.mark.parametrize("index", range(5))
def test_mixed_precision(index, mixed_precision):
    layer = _all_layers()[index]
    out = layer([H.astype("float16"), Z])
    assert out.dtype == "float16"
    assert all(w.dtype == "float32" for w in layer.weights)


@pytest.mark.parametrize("index", range(5))
def test_trains_in_functional_and_subclassed_models(index):
    targets = np.ones((8, 2), "float32")
    inputs = [np.vstack([H, H]), np.vstack([Z, Z])]
    fit_briefly(_functional(_all_layers()[index]), inputs, targets)

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(6)
            self.conditioning = _all_layers()[index]
            self.out = keras.layers.Dense(2)

        def call(self, inputs):
            h, z = inputs
            return self.out(self.conditioning([self.dense(h), z]))

    fit_briefly(Subclassed(), inputs, targets)
