"""Tests of tf_mtml.layers.shared_bottom."""

import keras
import numpy as np
import pytest

from tests.layers.helpers import (
    assert_config_round_trip,
    assert_keras_file_round_trip,
    fit_briefly,
)
from tf_mtml.layers import (
    MMoE,
    MultiHead,
    SharedBottom,
    TaskTowers,
    mmoe_param_count,
    shared_bottom_param_count,
    shared_bottom_units_for_budget,
)

X = np.random.default_rng(0).normal(size=(8, 5)).astype("float32")
UNITS = {"income": 1, "marital": 3}


def _shared_bottom_model(input_dim, bottom_units, tower_units):
    inputs = keras.Input((input_dim,))
    return keras.Model(inputs, SharedBottom(UNITS, bottom_units, tower_units)(inputs))


def _mmoe_model(input_dim, num_experts, expert_units, tower_units, use_gate_bias=True):
    inputs = keras.Input((input_dim,))
    mmoe = MMoE(num_experts, expert_units, len(UNITS), use_gate_bias=use_gate_bias)
    return keras.Model(inputs, TaskTowers(UNITS, tower_units)(mmoe(inputs)))


def test_shared_bottom_is_multi_head_with_bottom_units():
    layer = SharedBottom(UNITS, bottom_units=(4,), tower_units=(3,))
    assert isinstance(layer, MultiHead)
    config = assert_config_round_trip(layer).get_config()
    assert config["bottom_units"] == (4,) and "trunk_units" not in config
    with pytest.raises(ValueError, match=r"bottom_units=\(0,\)"):
        SharedBottom(UNITS, bottom_units=(0,))


def test_keras_file_round_trip_and_training(tmp_path):
    model = _shared_bottom_model(5, (4,), (3,))
    assert_keras_file_round_trip(model, X, tmp_path)
    fit_briefly(model, X, {"income": np.ones((8, 1)), "marital": np.ones((8, 3))})


@pytest.mark.parametrize(
    "bottom_units, tower_units", [((4,), ()), ((6, 4), (3,)), ((), (2, 2)), ((7,), (5, 3))]
)
def test_shared_bottom_param_count_is_count_params(bottom_units, tower_units):
    model = _shared_bottom_model(5, bottom_units, tower_units)
    assert shared_bottom_param_count(5, bottom_units, UNITS, tower_units) == model.count_params()


@pytest.mark.parametrize(
    "num_experts, expert_units, tower_units, use_gate_bias",
    [(3, (4,), (), True), (2, (6, 4), (3,), True), (5, 7, (2, 2), False)],
)
def test_mmoe_param_count_is_count_params(num_experts, expert_units, tower_units, use_gate_bias):
    model = _mmoe_model(5, num_experts, expert_units, tower_units, use_gate_bias)
    closed_form = mmoe_param_count(
        5, num_experts, expert_units, len(UNITS), tower_units, UNITS, use_gate_bias
    )
    assert closed_form == model.count_params()


@pytest.mark.parametrize("num_bottom_layers", [1, 2])
def test_budget_matched_shared_bottom_is_within_one_width_step(num_bottom_layers):
    input_dim, tower_units = 16, (4,)
    budget = mmoe_param_count(input_dim, 4, (8, 6), 2, tower_units, UNITS)
    width = shared_bottom_units_for_budget(
        input_dim, budget, UNITS, tower_units, num_bottom_layers=num_bottom_layers
    )
    model = _shared_bottom_model(input_dim, (width,) * num_bottom_layers, tower_units)

    def count(w):
        return shared_bottom_param_count(input_dim, (w,) * num_bottom_layers, UNITS, tower_units)

    assert model.count_params() == count(width)
    assert count(width - 1) <= budget <= count(width + 1)
    brute_force = min(range(1, 10 * width), key=lambda w: (abs(count(w) - budget), w))
    assert width == brute_force


def test_budget_edge_cases():
    assert shared_bottom_units_for_budget(10, 1, UNITS) == 1  # below the smallest model
    exact = shared_bottom_param_count(10, (37,), UNITS)
    assert shared_bottom_units_for_budget(10, exact, UNITS) == 37
    assert shared_bottom_units_for_budget(10, exact + 1, UNITS) == 37


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: shared_bottom_units_for_budget(10, 0, UNITS), "param_budget=0"),
        (lambda: shared_bottom_units_for_budget(0, 100, UNITS), "input_dim=0"),
        (lambda: shared_bottom_units_for_budget(10, 100, UNITS, (), 0), "num_bottom_layers=0"),
        (lambda: shared_bottom_units_for_budget(10, 100, {}), r"task_output_units=\{\}"),
        (lambda: mmoe_param_count(10, 2, (4,), 3, (), UNITS), "num_tasks=3"),
        (lambda: mmoe_param_count(10, 0, (4,), 2, (), UNITS), "num_experts=0"),
        (lambda: mmoe_param_count(10, 2, (), 2, (), UNITS), r"expert_units=\(\)"),
    ],
)
def test_invalid_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_mixed_precision_and_subclassed_model(mixed_precision):
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.body = SharedBottom(UNITS, (4,), (3,), dropout=0.1)

        def call(self, inputs, training=None):
            return self.body(inputs, training=training)

    model = Subclassed()
    outputs = model(X)
    assert all(out.dtype == "float32" for out in outputs.values())
    assert model.body.trunk.compute_dtype == "float16"
    fit_briefly(model, X, {"income": np.ones((8, 1)), "marital": np.ones((8, 3))})
