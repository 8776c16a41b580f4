"""Tests of tf_mtml.layers.mmoe."""

import keras
import numpy as np
import pytest

from tests.layers.helpers import (
    assert_config_round_trip,
    assert_keras_file_round_trip,
    fit_briefly,
)
from tf_mtml.layers import MMoE, TaskTowers

RNG = np.random.default_rng(0)
X = RNG.normal(size=(8, 5)).astype("float32")


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _mmoe_numpy(layer, x):
    """The paper's formula with one loop over experts and one over tasks, in float64."""
    x = x.astype("float64")
    kernels = [np.asarray(k, "float64") for k in layer.expert_kernels]
    biases = [np.asarray(b, "float64") for b in layer.expert_biases]
    gate_kernel = np.asarray(layer.gate_kernel, "float64")
    gate_bias = (
        np.asarray(layer.gate_bias)
        if layer.use_gate_bias
        else np.zeros((layer.num_tasks, layer.num_experts))
    )
    experts = []
    for i in range(layer.num_experts):
        h = np.maximum(x @ kernels[0][:, i, :] + biases[0][i], 0.0)
        for kernel, bias in zip(kernels[1:], biases[1:], strict=True):
            h = np.maximum(h @ kernel[i] + bias[i], 0.0)
        experts.append(h)
    outputs, gates = [], []
    for k in range(layer.num_tasks):
        g = _softmax(x @ gate_kernel[:, k, :] + gate_bias[k])
        gates.append(g)
        outputs.append(sum(g[:, i : i + 1] * experts[i] for i in range(layer.num_experts)))
    return outputs, np.stack(gates, axis=1)


def _randomized(layer, input_dim=5):
    layer.build((None, input_dim))
    for w in layer.weights:
        w.assign(RNG.normal(scale=0.5, size=w.shape).astype("float32"))
    return layer


@pytest.mark.parametrize("use_gate_bias", [True, False])
def test_forward_matches_numpy_reference(use_gate_bias):
    layer = _randomized(MMoE(4, (6, 3), 3, use_gate_bias=use_gate_bias))
    outputs = layer(X)
    expected, expected_gates = _mmoe_numpy(layer, X)
    assert len(outputs) == 3
    for out, exp in zip(outputs, expected, strict=True):
        assert out.shape == (8, 3)
        np.testing.assert_allclose(np.asarray(out), exp, rtol=1e-5, atol=1e-5)
    gates = layer.gate_weights(X)
    assert gates.dtype == "float32" and gates.shape == (8, 3, 4)
    np.testing.assert_allclose(np.asarray(gates), expected_gates, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gates).sum(-1), 1.0, rtol=1e-6)
    assert layer.compute_output_shape((None, 5)) == [(None, 3)] * 3


def _gate_revealing_mmoe(num_experts=4, expert_dropout=0.9):
    """Expert i outputs the unit vector e_i, so task k's output is its (dropped) gate vector."""
    layer = MMoE(
        num_experts,
        num_experts,
        num_tasks=3,
        expert_activation=None,
        expert_dropout=expert_dropout,
        seed=0,
    )
    layer.build((None, 3))
    layer.expert_kernels[0].assign(np.zeros((3, num_experts, num_experts), "float32"))
    layer.expert_biases[0].assign(np.eye(num_experts, dtype="float32"))
    layer.gate_kernel.assign(RNG.normal(size=(3, 3, num_experts)).astype("float32"))
    return layer


def test_expert_dropout_renormalises_and_never_drops_all():
    layer = _gate_revealing_mmoe(num_experts=4, expert_dropout=0.9)
    x = RNG.normal(size=(2000, 3)).astype("float32")
    gates = np.asarray(layer.gate_weights(x))
    dropped = np.stack([np.asarray(o) for o in layer(x, training=True)], axis=1)  # (b, T, E)
    kept = dropped[:, 0, :] > 0
    assert np.all(gates > 0)
    np.testing.assert_array_equal(dropped > 0, np.broadcast_to(kept[:, None], dropped.shape))
    assert np.all(kept.sum(-1) >= 1)
    np.testing.assert_array_equal(dropped[~np.broadcast_to(kept[:, None], dropped.shape)], 0.0)
    np.testing.assert_allclose(dropped.sum(-1), 1.0, rtol=1e-6)
    renormalised = gates * kept[:, None] / (gates * kept[:, None]).sum(-1, keepdims=True)
    np.testing.assert_allclose(dropped, renormalised, rtol=1e-5, atol=1e-7)
    # P(kept) = 0.1 + P(all four dropped) / 4 when the fallback expert is uniform.
    assert kept.mean() == pytest.approx(0.1 + 0.9**4 / 4, abs=0.03)
    assert np.unique(kept, axis=0).shape[0] > 4  # the masks differ between examples


def test_expert_dropout_is_not_applied_at_inference():
    layer = _gate_revealing_mmoe(expert_dropout=0.5)
    x = RNG.normal(size=(16, 3)).astype("float32")
    gates = np.asarray(layer.gate_weights(x))
    for training in (False, None):
        outputs = np.stack([np.asarray(o) for o in layer(x, training=training)], axis=1)
        np.testing.assert_allclose(outputs, gates, rtol=1e-6, atol=1e-7)
    no_dropout = _gate_revealing_mmoe(expert_dropout=0.0)
    outputs = no_dropout(x, training=True)
    expected = np.asarray(no_dropout.gate_weights(x))
    np.testing.assert_allclose(np.stack(outputs, 1), expected, rtol=1e-6, atol=1e-7)


def _functional_mmoe(**kwargs):
    inputs = keras.Input((5,))
    layer = MMoE(3, (4,), 2, task_names=["a", "b"], **kwargs)
    outputs = TaskTowers({"a": 1, "b": 2}, (3,))(layer(inputs))
    return keras.Model(inputs, outputs), layer


def test_gate_statistics_are_model_metrics_and_fit_logs():
    model, layer = _functional_mmoe(expert_dropout=0.5, seed=1)
    assert layer.gate_statistics in model.metrics
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    targets = {"a": np.zeros((8, 1), "float32"), "b": np.zeros((8, 2), "float32")}
    history = model.fit(X, targets, batch_size=4, epochs=1, verbose=0, shuffle=False).history
    gates = np.asarray(layer.gate_weights(X))  # pre-dropout gates; weights unchanged (lr 0)
    entropy = -(gates * np.log(gates)).sum(-1).mean(0)
    for k, task in enumerate(["a", "b"]):
        assert history[f"gate/{task}/entropy"][0] == pytest.approx(entropy[k], rel=1e-5)
        for i in range(3):
            weight = history[f"gate/{task}/expert{i}_weight"][0]
            assert weight == pytest.approx(gates[:, k, i].mean(), rel=1e-5)
    model.reset_metrics()
    assert all(float(v) == 0.0 for v in layer.gate_statistics.result().values())


def test_gate_statistics_update_only_in_training():
    model, layer = _functional_mmoe()
    model(X, training=False)
    model(X)
    assert float(layer.gate_statistics.count) == 0.0
    model(X, training=True)
    assert float(layer.gate_statistics.count) == 8.0
    layer.gate_statistics.reset_state()
    assert float(layer.gate_statistics.count) == 0.0


def test_without_gate_statistics():
    model, layer = _functional_mmoe(track_gate_statistics=False)
    assert layer.gate_statistics is None
    history = fit_briefly(model, X, {"a": np.ones((8, 1)), "b": np.ones((8, 2))})
    assert not [key for key in history if key.startswith("gate/")]


def test_kernels_are_initialised_with_per_expert_fans():
    layer = MMoE(8, (32, 16), num_tasks=4)
    layer.build((None, 64))
    glorot_variance = {  # 2 / (fan_in + fan_out) of one expert's (gate's) kernel
        "expert_kernel_0": 2 / (64 + 32),
        "expert_kernel_1": 2 / (32 + 16),
        "gate_kernel": 2 / (64 + 8),
    }
    for weight in (*layer.expert_kernels, layer.gate_kernel):
        variance = np.asarray(weight).var()
        assert variance == pytest.approx(glorot_variance[weight.name], rel=0.1)
    kernel0 = np.asarray(layer.expert_kernels[0])
    assert not np.allclose(kernel0[:, 0], kernel0[:, 1])


def test_seeded_initializer_is_reproducible_and_weights_differ():
    def build():
        layer = MMoE(2, (4, 4, 4), 2, kernel_initializer=keras.initializers.GlorotUniform(3))
        layer.build((None, 4))
        return [np.asarray(w) for w in layer.weights]

    first, second = build(), build()
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[2], first[4])  # expert kernels 1 and 2, same shape


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_experts": 0}, "num_experts=0"),
        ({"num_tasks": 0}, "num_tasks=0"),
        ({"num_tasks": True}, "num_tasks=True"),
        ({"expert_units": ()}, r"expert_units=\(\)"),
        ({"expert_units": (4, -1)}, r"expert_units=\(4, -1\)"),
        ({"expert_dropout": 1.0}, "expert_dropout=1.0"),
        ({"expert_dropout": -0.5}, "expert_dropout=-0.5"),
        ({"task_names": ["a"]}, r"task_names=\['a'\]"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    arguments = {"num_experts": 2, "expert_units": (4,), "num_tasks": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        MMoE(**arguments)


def test_invalid_input_shape_raises():
    with pytest.raises(ValueError, match=r"input_shape=\(None, 2, 5\)"):
        MMoE(2, 4, 2).build((None, 2, 5))


def test_config_and_keras_file_round_trip(tmp_path):
    model, layer = _functional_mmoe(expert_dropout=0.2, expert_activation="tanh", seed=4)
    clone = assert_config_round_trip(layer)
    assert clone.task_names == ("a", "b") and clone.expert_units == (4,)
    loaded = assert_keras_file_round_trip(model, X, tmp_path)
    loaded_layer = next(lyr for lyr in loaded.layers if isinstance(lyr, MMoE))
    np.testing.assert_array_equal(
        np.asarray(loaded_layer.gate_weights(X)), np.asarray(layer.gate_weights(X))
    )


def test_mixed_precision(mixed_precision):
    reference = keras.mixed_precision.Policy("float32")
    exact = _randomized(MMoE(4, (6, 3), 3, dtype=reference))
    layer = MMoE(4, (6, 3), 3)
    layer.build((None, 5))
    layer.set_weights(exact.get_weights())
    outputs = layer(X, training=True)
    assert all(o.dtype == "float16" for o in outputs)
    assert layer.gate_weights(X).dtype == "float32"
    assert layer.gate_kernel.dtype == "float32"
    for out, exp in zip(outputs, exact(X), strict=True):
        np.testing.assert_allclose(np.asarray(out, "float32"), exp, rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(np.asarray(layer.gate_weights(X)), np.asarray(exact.gate_weights(X)))
    model, _ = _functional_mmoe(expert_dropout=0.3)
    history = fit_briefly(model, X, {"a": np.ones((8, 1)), "b": np.ones((8, 2))})
    assert 0.0 < history["gate/a/entropy"][0] <= np.log(3.0) + 1e-6


def test_trains_in_subclassed_model_and_under_xla():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.mmoe = MMoE(3, 4, 2, expert_dropout=0.3, seed=0)
            self.towers = TaskTowers({"a": 1, "b": 1})

        def call(self, inputs, training=None):
            return self.towers(self.mmoe(inputs, training=training), training=training)

    targets = {"a": np.ones((8, 1), "float32"), "b": np.zeros((8, 1), "float32")}
    history = fit_briefly(Subclassed(), X, targets)
    assert "gate/task1/expert2_weight" in history
    model, _ = _functional_mmoe(expert_dropout=0.3, seed=0)
    model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    history = model.fit(X, {"a": np.ones((8, 1)), "b": np.ones((8, 2))}, batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert history.history["gate/b/expert0_weight"][0] > 0.0
