"""Tests of tf_mtml.layers.ple."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.layers.helpers import (
    assert_config_round_trip,
    assert_keras_file_round_trip,
    fit_briefly,
)
from tf_mtml.layers import CGC, PLE, TaskTowers

RNG = np.random.default_rng(0)
X = RNG.normal(size=(8, 5)).astype("float32")


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _cgc_numpy(layer, inputs):
    """The paper's CGC with loops over experts and gates, float64; returns outputs, gates."""
    num_tasks, m = layer.num_tasks, layer.num_task_experts
    if isinstance(inputs, list):
        task_inputs, shared_input = inputs[:-1], inputs[-1]
    else:
        task_inputs, shared_input = [inputs] * num_tasks, inputs
    task_inputs = [np.asarray(q, "float64") for q in task_inputs]
    shared_input = np.asarray(shared_input, "float64")
    # Experts numbered task 0's, ..., task T-1's, then the shared ones.
    kernels = [np.concatenate([task, shared], axis=1 if i == 0 else 0).astype("float64")
               for i, (task, shared) in enumerate(zip(layer.task_expert_kernels,
                                                      layer.shared_expert_kernels, strict=True))]
    biases = [np.concatenate([task, shared]).astype("float64")
              for task, shared in zip(layer.task_expert_biases, layer.shared_expert_biases,
                                      strict=True)]
    experts = []
    for e in range(layer.num_experts):
        q = task_inputs[e // m] if e < num_tasks * m else shared_input
        h = np.maximum(q @ kernels[0][:, e, :] + biases[0][e], 0.0)
        for kernel, bias in zip(kernels[1:], biases[1:], strict=True):
            h = np.maximum(h @ kernel[e] + bias[e], 0.0)
        experts.append(h)
    shared = list(range(num_tasks * m, layer.num_experts))
    gate_kernel = np.asarray(layer.gate_kernel, "float64")
    outputs, gates = [], []
    for k in range(num_tasks):
        logits = task_inputs[k] @ gate_kernel[:, k, :]
        if layer.use_gate_bias:
            logits = logits + np.asarray(layer.gate_bias)[k]
        g = _softmax(logits)
        gates.append(g)
        selected = list(range(k * m, (k + 1) * m)) + shared
        outputs.append(sum(g[:, [n]] * experts[e] for n, e in enumerate(selected)))
    if layer.shared_output:
        logits = shared_input @ np.asarray(layer.shared_gate_kernel, "float64")
        if layer.use_gate_bias:
            logits = logits + np.asarray(layer.shared_gate_bias)
        g = _softmax(logits)
        outputs.append(sum(g[:, [e]] * experts[e] for e in range(layer.num_experts)))
    return outputs, np.stack(gates, axis=1)


def _randomized(layer, input_shape=(None, 5)):
    layer.build(input_shape)
    for w in layer.weights:
        w.assign(RNG.normal(scale=0.5, size=w.shape).astype("float32"))
    return layer


def _assert_close(actual, expected, tol=1e-5):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(np.asarray(a), e, rtol=tol, atol=tol)


@pytest.mark.parametrize("shared_output", [False, True])
@pytest.mark.parametrize("use_gate_bias", [True, False])
def test_cgc_matches_numpy_reference(shared_output, use_gate_bias):
    layer = _randomized(
        CGC(3, 2, 3, (6, 4), shared_output=shared_output, use_gate_bias=use_gate_bias)
    )
    outputs = layer(X)
    expected, expected_gates = _cgc_numpy(layer, X)
    assert len(outputs) == 3 + shared_output and all(o.shape == (8, 4) for o in outputs)
    _assert_close(outputs, expected)
    gates = layer.gate_weights(X)
    assert gates.dtype == "float32" and gates.shape == (8, 3, 5)
    np.testing.assert_allclose(np.asarray(gates), expected_gates, rtol=1e-5, atol=1e-6)
    assert layer.compute_output_shape((None, 5)) == [(None, 4)] * (3 + shared_output)


def test_cgc_on_per_task_and_shared_inputs_matches_numpy():
    layer = _randomized(CGC(2, 1, 2, 3, shared_output=True), [(None, 5)] * 3)
    inputs = [RNG.normal(size=(8, 5)).astype("float32") for _ in range(3)]
    _assert_close(layer(inputs), _cgc_numpy(layer, inputs)[0])
    expected_shared = _softmax(inputs[-1] @ np.asarray(layer.shared_gate_kernel, "float64")
                               + np.asarray(layer.shared_gate_bias))
    np.testing.assert_allclose(np.asarray(layer.shared_gate_weights(inputs)), expected_shared,
                               rtol=1e-5, atol=1e-6)


def test_ple_chains_levels_like_the_numpy_reference():
    layer = _randomized(PLE(2, 3, 2, 1, (4, 3)))
    assert [lvl.shared_output for lvl in layer.levels] == [True, True, False]
    h = X
    for level in layer.levels:
        h = _cgc_numpy(level, h)[0]
    outputs = layer(X)
    assert len(outputs) == 2
    _assert_close(outputs, h)
    assert layer.compute_output_shape((None, 5)) == [(None, 3)] * 2


def test_one_level_ple_is_a_cgc():
    ple = _randomized(PLE(2, 1, 1, 2, (4,)))
    cgc = CGC(2, 1, 2, (4,))
    cgc.build((None, 5))
    cgc.set_weights(ple.get_weights())
    _assert_close(ple(X), [np.asarray(o) for o in cgc(X)], tol=0.0)


def _gate_revealing_cgc(expert_dropout, shared_output=True):
    """Expert e outputs the unit vector e_e, so every output is its (dropped) gate vector."""
    layer = CGC(2, 2, 2, 6, expert_activation=None, expert_dropout=expert_dropout,
                shared_output=shared_output, seed=0)
    layer.build((None, 3))
    layer.task_expert_kernels[0].assign(np.zeros((3, 4, 6), "float32"))
    layer.shared_expert_kernels[0].assign(np.zeros((3, 2, 6), "float32"))
    layer.task_expert_biases[0].assign(np.eye(6, dtype="float32")[:4])
    layer.shared_expert_biases[0].assign(np.eye(6, dtype="float32")[4:])
    layer.gate_kernel.assign(RNG.normal(size=(3, 2, 4)).astype("float32"))
    layer.shared_gate_kernel.assign(RNG.normal(size=(3, 6)).astype("float32"))
    return layer


def _renormalised(gates, kept):
    return gates * kept / (gates * kept).sum(-1, keepdims=True)


def test_expert_dropout_shares_one_mask_and_renormalises_every_gate():
    layer = _gate_revealing_cgc(expert_dropout=0.6)
    x = RNG.normal(size=(3000, 3)).astype("float32")
    gates, shared_gates = np.asarray(layer.gate_weights(x)), np.asarray(
        layer.shared_gate_weights(x))
    outputs = [np.asarray(o) for o in layer(x, training=True)]  # (b, 6) each
    subsets = [[0, 1, 4, 5], [2, 3, 4, 5]]
    shared_kept = outputs[2] > 0
    assert np.all(shared_kept.sum(-1) >= 1)
    np.testing.assert_allclose(outputs[2], _renormalised(shared_gates, shared_kept), rtol=1e-5,
                               atol=1e-7)
    # P(an expert is kept by a gate of n experts) = (1 - p) + p**n / n with the fallback.
    assert shared_kept.mean() == pytest.approx(0.4 + 0.6**6 / 6, abs=0.02)
    for k, subset in enumerate(subsets):
        others = [e for e in range(6) if e not in subset]
        np.testing.assert_array_equal(outputs[k][:, others], 0.0)
        kept = outputs[k][:, subset] > 0
        assert np.all(kept.sum(-1) >= 1)
        np.testing.assert_allclose(outputs[k][:, subset], _renormalised(gates[:, k], kept),
                                   rtol=1e-5, atol=1e-7)
        assert kept.mean() == pytest.approx(0.4 + 0.6**4 / 4, abs=0.02)
        # Where the shared gate kept >= 2 experts, it shows the example's mask: a task gate
        # keeps exactly the masked experts of its subset, or one expert if none is kept.
        rows = shared_kept.sum(-1) >= 2
        in_subset = shared_kept[rows][:, subset]
        some = in_subset.any(-1)
        np.testing.assert_array_equal(kept[rows][some], in_subset[some])
        assert np.all(kept[rows][~some].sum(-1) == 1)


def test_expert_dropout_is_not_applied_at_inference():
    layer = _gate_revealing_cgc(expert_dropout=0.5)
    x = RNG.normal(size=(16, 3)).astype("float32")
    gates = np.asarray(layer.gate_weights(x))
    for training in (False, None):
        outputs = layer(x, training=training)
        np.testing.assert_allclose(np.asarray(outputs[0])[:, [0, 1, 4, 5]], gates[:, 0],
                                   rtol=1e-6)
        np.testing.assert_allclose(np.asarray(outputs[2]), np.asarray(
            layer.shared_gate_weights(x)), rtol=1e-6)


def _functional_ple(**kwargs):
    inputs = keras.Input((5,))
    layer = PLE(2, 2, 1, 2, (4,), task_names=["a", "b"], **kwargs)
    outputs = TaskTowers({"a": 1, "b": 2}, (3,))(layer(inputs))
    return keras.Model(inputs, outputs), layer


@pytest.mark.parametrize("expert_dropout", [0.0, 0.5])
def test_gate_statistics_of_every_level_reach_the_fit_logs(expert_dropout):
    model, layer = _functional_ple(expert_dropout=expert_dropout, seed=1)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    targets = {"a": np.zeros((8, 1), "float32"), "b": np.zeros((8, 2), "float32")}
    history = model.fit(X, targets, batch_size=4, epochs=1, verbose=0, shuffle=False).history
    level0, level1 = layer.levels
    # Pre-dropout gates of unchanged weights (lr 0). Level 1 reads level 0's outputs, which
    # expert dropout makes random: its expected values hold without dropout only.
    expected = {0: np.asarray(level0.gate_weights(X))}
    if not expert_dropout:
        expected[1] = np.asarray(level1.gate_weights(level0(X)))
    for j, gates in expected.items():
        for k, task in enumerate(["a", "b"]):
            for i in range(3):
                weight = history[f"gate/level{j}/{task}/expert{i}_weight"][0]
                assert weight == pytest.approx(gates[:, k, i].mean(), rel=1e-5)
    shared0 = np.asarray(level0.shared_gate_weights(X))
    for i in range(4):
        weight = history[f"gate/level0/shared/expert{i}_weight"][0]
        assert weight == pytest.approx(shared0[:, i].mean(), rel=1e-5)
    entropy = -(shared0 * np.log(shared0)).sum(-1).mean()
    assert history["gate/level0/shared/entropy"][0] == pytest.approx(entropy, rel=1e-5)
    assert "gate/level1/b/expert2_weight" in history
    assert not any(key.startswith("gate/level1/shared") for key in history)


def test_without_gate_statistics():
    model, layer = _functional_ple(track_gate_statistics=False)
    assert all(lvl.gate_statistics is None for lvl in layer.levels)
    history = fit_briefly(model, X, {"a": np.ones((8, 1)), "b": np.ones((8, 2))})
    assert not [key for key in history if key.startswith("gate/")]


def test_seeded_initializer_is_reproducible_and_levels_differ():
    def build():
        layer = PLE(2, 2, 1, 1, (5,), kernel_initializer=keras.initializers.GlorotUniform(3))
        layer.build((None, 5))
        return layer

    first, second = build(), build()
    for a, b in zip(first.weights, second.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    level0, level1 = first.levels  # same shapes: both read 5 features
    assert not np.allclose(level0.task_expert_kernels[0], level1.task_expert_kernels[0])
    assert not np.allclose(level0.task_expert_kernels[0], level0.shared_expert_kernels[0])
    assert not np.allclose(level0.gate_kernel, level1.gate_kernel)


def test_kernels_are_initialised_with_per_expert_fans():
    layer = CGC(2, 4, 4, (32, 16), shared_output=True)
    layer.build((None, 64))
    glorot_variance = {  # 2 / (fan_in + fan_out) of one expert's (gate's) kernel
        "task_expert_kernel_0": 2 / (64 + 32),
        "task_expert_kernel_1": 2 / (32 + 16),
        "shared_expert_kernel_0": 2 / (64 + 32),
        "gate_kernel": 2 / (64 + 8),
        "shared_gate_kernel": 2 / (64 + 12),
    }
    for weight in layer.weights:
        if weight.name in glorot_variance:
            variance = np.asarray(weight).var()
            assert variance == pytest.approx(glorot_variance[weight.name], rel=0.15)


def test_task_partitioned_weights_are_those_only_one_task_reads():
    """Task k's output must not depend on another task's slice of these weights."""
    for shared_output in (False, True):
        layer = _randomized(CGC(2, 1, 1, (3,), shared_output=shared_output))
        partitioned = layer.task_partitioned_weights
        names = {w.name for w in partitioned}
        expected = {"gate_kernel", "gate_bias"}
        if not shared_output:
            expected |= {"task_expert_kernel_0", "task_expert_bias_0"}
        assert names == expected
        with tf.GradientTape(persistent=True) as tape:
            sums = [tf.reduce_sum(o) for o in layer(X)]
        for weight in partitioned:
            axis = 1 if weight.name in ("gate_kernel", "task_expert_kernel_0") else 0
            gradient = np.asarray(tape.gradient(sums[0], weight))
            assert np.abs(np.take(gradient, 0, axis=axis)).max() > 0  # task 0's slice
            np.testing.assert_array_equal(np.take(gradient, 1, axis=axis), 0.0)  # task 1's
        if shared_output:  # the shared gate mixes task 1's experts into the shared output
            gradient = tape.gradient(sums[2], layer.task_expert_kernels[0])
            assert np.abs(np.asarray(gradient)[:, 1]).max() > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_tasks": 0}, "num_tasks=0"),
        ({"num_task_experts": 0}, "num_task_experts=0"),
        ({"num_shared_experts": -1}, "num_shared_experts=-1"),
        ({"expert_units": ()}, r"expert_units=\(\)"),
        ({"expert_dropout": 1.0}, "expert_dropout=1.0"),
        ({"task_names": ["a"]}, r"task_names=\['a'\]"),
        ({"task_names": ["a", "shared"], "shared_output": True}, "task named 'shared'"),
        ({"statistics_prefix": 3}, "statistics_prefix=3"),
    ],
)
def test_invalid_cgc_arguments_raise(kwargs, match):
    arguments = {"num_tasks": 2, "num_task_experts": 1, "num_shared_experts": 1,
                 "expert_units": (4,), **kwargs}
    with pytest.raises(ValueError, match=match):
        CGC(**arguments)


@pytest.mark.parametrize("num_levels", [0, 1.5])
def test_invalid_ple_levels_raise(num_levels):
    with pytest.raises(ValueError, match=f"num_levels={num_levels}"):
        PLE(2, num_levels, 1, 1, 4)


@pytest.mark.parametrize(
    "input_shape",
    [(None, 2, 5), [(None, 5), (None, 5)], [(None, 5), (None, 4), (None, 5)], (None, None)],
)
def test_invalid_input_shapes_raise(input_shape):
    with pytest.raises(ValueError, match="input_shape="):
        CGC(2, 1, 1, 4).build(input_shape)


def test_no_shared_gate_without_shared_output():
    layer = _randomized(CGC(2, 1, 1, 4))
    with pytest.raises(ValueError, match="shared_output=True"):
        layer.shared_gate_weights(X)


def test_config_and_keras_file_round_trip(tmp_path):
    model, layer = _functional_ple(expert_dropout=0.2, expert_activation="tanh", seed=4)
    clone = assert_config_round_trip(layer)
    assert clone.num_levels == 2 and clone.levels[0].task_names == ("a", "b")
    assert_config_round_trip(CGC(2, 1, 3, (4, 2), shared_output=True, statistics_prefix="x/"))
    assert_keras_file_round_trip(model, X, tmp_path)


def test_mixed_precision(mixed_precision):
    exact = _randomized(PLE(2, 2, 1, 2, (6, 3), dtype=keras.mixed_precision.Policy("float32")))
    layer = PLE(2, 2, 1, 2, (6, 3))
    layer.build((None, 5))
    layer.set_weights(exact.get_weights())
    outputs = layer(X, training=True)
    assert all(o.dtype == "float16" for o in outputs)
    assert layer.levels[0].gate_kernel.dtype == "float32"
    assert layer.levels[0].gate_weights(X).dtype == "float32"
    for out, exp in zip(outputs, exact(X), strict=True):
        np.testing.assert_allclose(np.asarray(out, "float32"), exp, rtol=2e-2, atol=2e-2)
    model, _ = _functional_ple(expert_dropout=0.3)
    history = fit_briefly(model, X, {"a": np.ones((8, 1)), "b": np.ones((8, 2))})
    assert 0.0 < history["gate/level1/a/entropy"][0] <= np.log(3.0) + 1e-6
