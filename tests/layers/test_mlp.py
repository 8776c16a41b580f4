"""Tests of tf_mtml.layers.mlp."""

import keras
import numpy as np
import pytest

from tests.layers.helpers import (
    assert_config_round_trip,
    assert_keras_file_round_trip,
    fit_briefly,
)
from tf_mtml.layers import MLP

X = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")


def test_matches_numpy():
    layer = MLP((4, 3), activation="relu")
    out = np.asarray(layer(X))
    h = X
    for dense in layer.dense_layers:
        kernel, bias = (np.asarray(w) for w in dense.weights)
        h = np.maximum(h @ kernel + bias, 0.0)
    np.testing.assert_allclose(out, h, rtol=1e-5, atol=1e-6)
    assert layer.compute_output_shape((None, 5)) == (None, 3)


def test_empty_units_is_identity():
    layer = MLP(())
    np.testing.assert_array_equal(np.asarray(layer(X)), X)
    assert not layer.weights
    assert layer.compute_output_shape((None, 5)) == (None, 5)


def test_dropout_only_in_training():
    layer = MLP((64,), activation=None, dropout=0.5)
    inference = np.asarray(layer(X, training=False))
    np.testing.assert_array_equal(inference, np.asarray(layer(X)))
    training = np.asarray(layer(X, training=True))
    dropped = training == 0.0
    assert 0.3 < dropped.mean() < 0.7
    np.testing.assert_allclose(training[~dropped], 2.0 * inference[~dropped], rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"units": (4, 0)}, r"units=\(4, 0\)"),
        ({"units": "64"}, "units='64'"),
        ({"units": (4,), "dropout": 1.0}, "dropout=1.0"),
        ({"units": (4,), "dropout": -0.1}, "dropout=-0.1"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLP(**kwargs)


def test_config_and_keras_file_round_trip(tmp_path):
    layer = MLP((4, 3), activation="tanh", dropout=0.1)
    assert_config_round_trip(layer)
    inputs = keras.Input((5,))
    assert_keras_file_round_trip(keras.Model(inputs, layer(inputs)), X, tmp_path)


def test_mixed_precision(mixed_precision):
    layer = MLP((4,))
    assert layer(X).dtype == "float16"
    assert layer.dense_layers[0].kernel.dtype == "float32"


def test_trains_in_functional_and_subclassed_models():
    inputs = keras.Input((5,))
    functional = keras.Model(inputs, MLP((4, 2), dropout=0.1)(inputs))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.mlp = MLP((4, 2), dropout=0.1)

        def call(self, inputs, training=None):
            return self.mlp(inputs, training=training)

    for model in (functional, Subclassed()):
        fit_briefly(model, X, np.ones((8, 2), "float32"))
