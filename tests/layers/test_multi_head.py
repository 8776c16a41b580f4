"""Tests of tf_mtml.layers.multi_head."""

import keras
import numpy as np
import pytest

from tests.layers.helpers import (
    assert_config_round_trip,
    assert_keras_file_round_trip,
    fit_briefly,
)
from tf_mtml.layers import MultiHead, TaskTowers

RNG = np.random.default_rng(0)
X = RNG.normal(size=(8, 5)).astype("float32")
UNITS = {"ctr": 1, "rating": 3}


def _mlp_numpy(x, dense_layers, activation=lambda v: np.maximum(v, 0.0)):
    for dense in dense_layers:
        kernel, bias = (np.asarray(w) for w in dense.weights)
        x = activation(x @ kernel + bias)
    return x


def _towers_numpy(towers, inputs):
    outputs = {}
    for x, task, tower, head in zip(inputs, UNITS, towers.towers, towers.heads, strict=True):
        kernel, bias = (np.asarray(w) for w in head.weights)
        outputs[task] = _mlp_numpy(x, tower.dense_layers) @ kernel + bias
    return outputs


def test_shared_input_matches_numpy():
    towers = TaskTowers(UNITS, tower_units=(4,))
    outputs = towers(X)
    assert list(outputs) == ["ctr", "rating"]
    expected = _towers_numpy(towers, [X, X])
    for task in UNITS:
        assert outputs[task].shape == (8, UNITS[task])
        np.testing.assert_allclose(np.asarray(outputs[task]), expected[task], rtol=1e-5, atol=1e-5)


def test_per_task_inputs_go_to_their_towers():
    inputs = [X, RNG.normal(size=(8, 2)).astype("float32")]
    towers = TaskTowers(UNITS, tower_units=(4,))
    outputs = towers(inputs)
    expected = _towers_numpy(towers, inputs)
    for task in UNITS:
        np.testing.assert_allclose(np.asarray(outputs[task]), expected[task], rtol=1e-5, atol=1e-5)
    assert towers.compute_output_shape([(None, 5), (None, 2)]) == {
        "ctr": (None, 1),
        "rating": (None, 3),
    }


def test_no_tower_units_is_a_linear_head():
    towers = TaskTowers(UNITS)
    outputs = towers(X)
    kernel, bias = (np.asarray(w) for w in towers.heads[1].weights)
    np.testing.assert_allclose(np.asarray(outputs["rating"]), X @ kernel + bias, rtol=1e-5)


def test_multi_head_is_trunk_then_towers():
    layer = MultiHead(UNITS, trunk_units=(6, 4), tower_units=(3,))
    outputs = layer(X)
    trunk = _mlp_numpy(X, layer.trunk.dense_layers)
    expected = _towers_numpy(layer.towers, [trunk, trunk])
    for task in UNITS:
        np.testing.assert_allclose(np.asarray(outputs[task]), expected[task], rtol=1e-5, atol=1e-5)
    assert layer.compute_output_shape((None, 5)) == {"ctr": (None, 1), "rating": (None, 3)}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"task_output_units": {}}, r"task_output_units=\{\}"),
        ({"task_output_units": {"a": 0}}, r"task_output_units=\{'a': 0\}"),
        ({"task_output_units": ["a"]}, r"task_output_units=\['a'\]"),
        ({"task_output_units": UNITS, "tower_units": (0,)}, r"tower_units=\(0,\)"),
        ({"task_output_units": UNITS, "dropout": 1.5}, "dropout=1.5"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TaskTowers(**kwargs)


def test_multi_head_invalid_trunk_raises():
    with pytest.raises(ValueError, match=r"trunk_units=\(-2,\)"):
        MultiHead(UNITS, trunk_units=(-2,))


def test_wrong_number_of_task_inputs_raises():
    towers = TaskTowers(UNITS)
    with pytest.raises(ValueError, match="a list of 2 tensors"):
        towers([X, X, X])


@pytest.mark.parametrize("shared_inputs", [True, False])
def test_config_and_keras_file_round_trip(shared_inputs, tmp_path):
    layer = (
        MultiHead(UNITS, trunk_units=(4,), tower_units=(3,), dropout=0.1)
        if shared_inputs
        else TaskTowers(UNITS, tower_units=(3,), activation="tanh")
    )
    assert_config_round_trip(layer)
    inputs = keras.Input((5,))
    outputs = layer(inputs if shared_inputs else [inputs, keras.layers.Dense(2)(inputs)])
    assert_keras_file_round_trip(keras.Model(inputs, outputs), X, tmp_path)


def test_mixed_precision_outputs_are_float32(mixed_precision):
    inputs = keras.Input((5,))
    layer = MultiHead(UNITS, trunk_units=(4,), tower_units=(3,))
    symbolic = layer(inputs)
    model = keras.Model(inputs, symbolic)
    eager = model(X)
    for task in UNITS:
        assert symbolic[task].dtype == "float32"
        assert eager[task].dtype == "float32"
    assert layer.trunk.dense_layers[0].compute_dtype == "float16"
    assert layer.towers.towers[0].dense_layers[0].compute_dtype == "float16"
    fit_briefly(model, X, {"ctr": np.ones((8, 1)), "rating": np.ones((8, 3))})


def test_trains_in_functional_and_subclassed_models():
    inputs = keras.Input((5,))
    functional = keras.Model(inputs, MultiHead(UNITS, (4,), (3,), dropout=0.1)(inputs))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.trunk = keras.layers.Dense(4)
            self.towers = TaskTowers(UNITS, (3,))

        def call(self, inputs, training=None):
            return self.towers(self.trunk(inputs), training=training)

    targets = {"ctr": np.ones((8, 1), "float32"), "rating": np.ones((8, 3), "float32")}
    for model in (functional, Subclassed()):
        fit_briefly(model, X, targets)
