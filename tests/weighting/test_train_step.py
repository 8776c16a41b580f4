"""`multitask_train_step` against gradients computed independently of it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.layers.mmoe import MMoE
from tf_mtml.layers.multi_head import TaskTowers
from tf_mtml.models.multitask_model import MultiTaskModel
from tf_mtml.models.task_spec import TaskSpec
from tf_mtml.weighting.diagnostics import GradientDiagnostics
from tf_mtml.weighting.train_step import (
    multitask_train_step,
    shared_variable_indices,
    task_partitioned_variables,
)

TASKS = [TaskSpec("a", "regression"), TaskSpec("b", "regression", weight=0.5)]
PRIORS = np.array([1.0, 0.5])
LR = 0.1


def _network(shared=True, regularizer=None):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,), name="x")
    if shared:
        h = keras.layers.Dense(2, kernel_regularizer=regularizer, name="shared")(inputs)
        h_a = h_b = h
    else:
        h_a = keras.layers.Dense(2, name="own_a")(inputs)
        h_b = keras.layers.Dense(2, name="own_b")(inputs)
    outputs = {"a": keras.layers.Dense(1, kernel_initializer="ones", name="head_a")(h_a),
               "b": keras.layers.Dense(1, kernel_initializer="ones", name="head_b")(h_b)}
    return keras.Model(inputs, outputs)


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype("float32")
    # Labels of opposite sign: the two tasks pull the shared layer apart.
    y = {"a": (5 + x @ [1.0, 0.5, 0.0]).astype("float32"),
         "b": (-5 + x @ [0.0, -1.0, 2.0]).astype("float32")}
    return x, y


def _task_gradients(model, x, y):
    """Each task's gradient on every trainable variable, from the MSE written out."""
    grads = []
    for k, name in enumerate(("a", "b")):
        with tf.GradientTape() as tape:
            out = model.network(x, training=True)[name][:, 0]
            loss = PRIORS[k] * tf.reduce_mean((out - y[name]) ** 2)
        grads.append([None if g is None else g.numpy() for g in
                      tape.gradient(loss, model.trainable_variables)])
    return grads


def _step(weighting, optimizer=None, network=None):
    model = MultiTaskModel(network or _network(), TASKS, weighting=weighting)
    x, y = _data()
    before = [v.numpy() for v in model.trainable_variables]
    grads = _task_gradients(model, x, y)
    optimizer = optimizer or keras.optimizers.SGD(LR)
    optimizer.build(model.trainable_variables)
    multitask_train_step(model, optimizer, x, y)
    return model, before, grads


def _total(grads):
    """The sum of the tasks' gradients per variable (a task-specific one has one term)."""
    return [a if b is None else b if a is None else a + b for a, b in zip(*grads, strict=True)]


def _shared_indices(model):
    return [i for i, v in enumerate(model.trainable_variables) if "shared" in v.path]


def _flat(arrays):
    return np.concatenate([a.reshape(-1) for a in arrays])


def _check_update(model, before, expected_grads):
    for v, old, g in zip(model.trainable_variables, before, expected_grads, strict=True):
        np.testing.assert_allclose(v.numpy(), old - LR * g, rtol=1e-4, atol=1e-5,
                                   err_msg=v.path)


def test_static_is_the_gradient_of_the_weighted_sum():
    model, before, grads = _step("static")
    _check_update(model, before, _total(grads))


@pytest.mark.parametrize("method", ["pcgrad", "mgda"])
def test_gradient_methods_on_shared_and_own_gradient_on_heads(method):
    model, before, grads = _step(method)
    shared = _shared_indices(model)
    g1, g2 = (_flat([g[i] for i in shared]) for g in grads)
    assert g1 @ g2 < 0  # the projection path is exercised
    if method == "pcgrad":
        combined = (g1 - (g1 @ g2) / (g2 @ g2) * g2) + (g2 - (g2 @ g1) / (g1 @ g1) * g1)
    else:
        gamma = np.clip((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0, 1)
        combined = gamma * g1 + (1 - gamma) * g2
    expected = _total(grads)
    sizes = np.cumsum([grads[0][i].size for i in shared])[:-1]
    for i, part in zip(shared, np.split(combined, sizes), strict=True):
        expected[i] = part.reshape(grads[0][i].shape)
    _check_update(model, before, expected)


def test_regularisation_gradient_is_added_after_the_combination():
    network = _network(regularizer=keras.regularizers.L2(0.1))
    kernel = network.get_layer("shared").kernel.numpy()
    model, before, grads = _step("pcgrad", network=network)
    plain, _, _ = _step("pcgrad")
    i = next(i for i, v in enumerate(model.trainable_variables) if v.path == "shared/kernel")
    change = (before[i] - model.trainable_variables[i].numpy()) / LR
    plain_change = (before[i] - plain.trainable_variables[i].numpy()) / LR
    np.testing.assert_allclose(change - plain_change, 0.2 * kernel, rtol=1e-4, atol=1e-6)


def test_gradnorm_trains_weights_on_its_own_loss_then_renormalises():
    model, before, grads = _step("gradnorm")
    variables = model.trainable_variables
    kernel = next(i for i, v in enumerate(variables) if v.path == "shared/kernel")
    weights = next(i for i, v in enumerate(variables) if v is model.weighting.loss_weights)
    norms = np.array([np.linalg.norm(g[kernel]) for g in grads])
    # First step: L(0) = L(t), so the target is the mean of G = w * n with w = 1.
    weight_grad = np.sign(norms - norms.mean()) * norms
    expected = _total(grads)
    expected[weights] = weight_grad
    for i, (v, old, g) in enumerate(zip(variables, before, expected, strict=True)):
        if i != weights:
            np.testing.assert_allclose(v.numpy(), old - LR * g, rtol=1e-4, atol=1e-5)
    stepped = np.maximum(before[weights] - LR * weight_grad, 0)
    np.testing.assert_allclose(variables[weights].numpy(), 2 * stepped / stepped.sum(),
                               rtol=1e-5)


def test_diagnostics_cosine_and_first_loss_ratio():
    network = _network()
    model = MultiTaskModel(network, TASKS, weighting="static")
    model.gradient_diagnostics = GradientDiagnostics(model.task_names)
    x, y = _data()
    grads = _task_gradients(model, x, y)
    shared = _shared_indices(model)
    g1, g2 = (_flat([g[i] for i in shared]) for g in grads)
    optimizer = keras.optimizers.SGD(LR)
    optimizer.build(model.trainable_variables)
    multitask_train_step(model, optimizer, x, y)
    result = {k: float(v) for k, v in model.gradient_diagnostics.result().items()}
    assert result == pytest.approx({
        "diagnostics/cos/a__b": g1 @ g2 / np.linalg.norm(g1) / np.linalg.norm(g2),
        "diagnostics/loss_ratio/a": 1.0, "diagnostics/loss_ratio/b": 1.0}, rel=1e-4)
    assert "gradient_diagnostics" in [m.name for m in model.metrics]


@pytest.mark.parametrize("weighting", ["pcgrad", "gradnorm"])
def test_loss_scale_optimizer_gives_the_unscaled_update(weighting):
    plain, _, _ = _step(weighting)
    scaled, _, _ = _step(weighting, keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(LR)))
    for a, b in zip(plain.trainable_variables, scaled.trainable_variables, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_mmoe_gates_are_task_specific():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    mmoe = MMoE(num_experts=3, expert_units=4, num_tasks=2, name="mmoe")
    outputs = TaskTowers({"a": 1, "b": 1}, name="towers")(mmoe(inputs))
    model = MultiTaskModel(keras.Model(inputs, outputs), TASKS, weighting="pcgrad")
    variables = model.trainable_variables
    assert task_partitioned_variables(model) == [mmoe.gate_kernel, mmoe.gate_bias]
    x, y = _data()
    grads = _task_gradients(model, x, y)
    shared = shared_variable_indices(grads, variables, task_partitioned_variables(model))
    assert sorted(variables[i].path for i in shared) == [
        "mmoe/expert_bias_0", "mmoe/expert_kernel_0"]
    # Task k's gradient touches only gate k: the gate update is each task's own gradient.
    gate = next(i for i, v in enumerate(variables) if v is mmoe.gate_kernel)
    assert np.all(grads[0][gate][:, 1] == 0) and np.all(grads[1][gate][:, 0] == 0)
    before = variables[gate].numpy()
    optimizer = keras.optimizers.SGD(LR)
    optimizer.build(variables)
    multitask_train_step(model, optimizer, x, y)
    np.testing.assert_allclose(variables[gate].numpy(),
                               before - LR * (grads[0][gate] + grads[1][gate]), rtol=1e-4,
                               atol=1e-6)


class _Columns(keras.layers.Layer):
    """One `(3, 2)` column per task stacked in one kernel: task k reads only column k."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(2, 3, 2), name="columns")

    def call(self, x):
        return [x @ self.kernel[0], x @ self.kernel[1]]

    @property
    def task_partitioned_weights(self):
        return [self.kernel]


def test_layers_declare_their_task_partitioned_weights():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    columns = _Columns(name="columns")
    h = keras.layers.Dense(3, name="shared")(inputs)
    outputs = TaskTowers({"a": 1, "b": 1}, name="towers")(columns(h))
    model = MultiTaskModel(keras.Model(inputs, outputs), TASKS, weighting="pcgrad")
    assert task_partitioned_variables(model) == [columns.kernel]
    x, y = _data()
    grads = _task_gradients(model, x, y)
    variables = model.trainable_variables
    shared = shared_variable_indices(grads, variables, task_partitioned_variables(model))
    assert sorted(variables[i].path for i in shared) == ["shared/bias", "shared/kernel"]


@pytest.mark.parametrize("weighting, message", [
    ("pcgrad", "The gradient method 'pcgrad' needs shared parameters.*loss-level weighting"),
    ("gradnorm", "GradNorm needs a shared layer"),
])
def test_methods_that_need_shared_parameters_say_so(weighting, message):
    with pytest.raises(ValueError, match=message):
        _step(weighting, network=_network(shared=False))


def test_diagnostics_need_shared_parameters():
    model = MultiTaskModel(_network(shared=False), TASKS, weighting="static")
    model.gradient_diagnostics = GradientDiagnostics(model.task_names)
    optimizer = keras.optimizers.SGD(LR)
    optimizer.build(model.trainable_variables)
    with pytest.raises(ValueError, match="Gradient diagnostics needs shared.*=false"):
        multitask_train_step(model, optimizer, *_data())
