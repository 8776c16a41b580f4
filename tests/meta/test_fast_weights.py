"""Fast weights: functional calls, inner gradient steps and recomputed (checkpointed) steps."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.meta.fast_weights import (
    functional_call,
    gradient_step,
    non_trainable_values,
    recomputed,
    trainable_values,
)

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 3)).astype("float32")


def _learner(batch_norm: bool = False) -> keras.Model:
    layers = [keras.Input((3,)), keras.layers.Dense(4, activation="tanh")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    return keras.Sequential([*layers, keras.layers.Dense(2)])


def test_functional_call_matches_model_with_assigned_weights_and_keeps_variables():
    model, reference = _learner(batch_norm=True), _learner(batch_norm=True)
    params = [RNG.normal(size=v.shape).astype("float32") for v in model.trainable_variables]
    reference.set_weights(model.get_weights())
    for variable, value in zip(reference.trainable_variables, params, strict=True):
        variable.assign(value)
    before = [w.numpy().copy() for w in model.weights]
    for training in (False, True):
        outputs = functional_call(model, [tf.constant(p) for p in params], X, training=training)
        np.testing.assert_allclose(outputs, reference(X, training=training), rtol=1e-6)
    for weight, value in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(weight.numpy(), value)
    np.testing.assert_array_equal(functional_call(model, trainable_values(model), X), model(X))
    assert len(non_trainable_values(model)) == 2  # moving mean and variance


def test_functional_call_rejects_wrong_number_of_params():
    model = _learner()
    with pytest.raises(ValueError, match=r"Received 3 parameter tensors .* has 4 trainable"):
        functional_call(model, trainable_values(model)[:3], X)


def test_gradient_step_closed_form_scalar_and_per_parameter_rates():
    """`loss = sum (p - c)**2` has gradient `2 (p - c)`."""
    c = [np.array([1.0, -2.0]), np.array([[0.5]])]
    params = [tf.constant([0.0, 1.0], tf.float64), tf.constant([[2.0]], tf.float64)]

    def loss_fn(ps):
        return sum(tf.reduce_sum((p - ci) ** 2) for p, ci in zip(ps, c, strict=True))

    new, loss = gradient_step(loss_fn, params, 0.1)
    assert float(loss) == pytest.approx(1.0 + 9.0 + 2.25)
    for p, ci, n in zip(params, c, new, strict=True):
        np.testing.assert_allclose(n, p.numpy() - 0.1 * 2 * (p.numpy() - ci))
    rates = [tf.constant([0.1, 0.3], tf.float64), tf.constant([[-0.2]], tf.float64)]
    new, _ = gradient_step(loss_fn, params, rates)
    for p, ci, r, n in zip(params, c, rates, new, strict=True):
        np.testing.assert_allclose(n, p.numpy() - r.numpy() * 2 * (p.numpy() - ci))


@pytest.mark.parametrize("first_order", [False, True])
def test_gradient_step_outer_derivative(first_order):
    """d p' / d p = 1 - 2 lr for the quadratic (second order), 1 when first order."""
    p = tf.constant(0.7, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(p)
        (new,), _ = gradient_step(lambda ps: (ps[0] - 3.0) ** 2, [p], 0.1,
                                  first_order=first_order)
    assert float(tape.gradient(new, p)) == pytest.approx(1.0 if first_order else 0.8)


def _inner_step(x, support):
    """One SGD step of `w` on a cubic loss: the outer gradient needs its second derivative."""
    (w,), _ = gradient_step(lambda ps: tf.reduce_sum(ps[0] ** 3 * support), [x], 0.05)
    return [w]


def _two_steps(step, x, support):
    (x,) = step(x, support)
    (x,) = step(x, support)
    return tf.reduce_sum(tf.sin(x))


@pytest.mark.parametrize("compiled", [False, True])
def test_recomputed_matches_plain_steps_second_order(compiled):
    support = tf.constant([0.5, -1.0, 2.0])
    x = tf.constant([0.3, 0.8, -0.4])

    def value_and_grad(step):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = _two_steps(step, x, support)
        return loss, tape.gradient(loss, x)

    plain, checkpointed = (value_and_grad, value_and_grad)
    if compiled:
        plain, checkpointed = tf.function(value_and_grad), tf.function(value_and_grad)
    expected_loss, expected_grad = plain(_inner_step)
    loss, grad = checkpointed(recomputed(_inner_step))
    # Closed form: x1 = x - 0.15 s x**2, d x1 / d x = 1 - 0.3 s x, chained twice.
    x0, s = x.numpy().astype(np.float64), support.numpy()
    x1 = x0 - 0.15 * s * x0**2
    x2 = x1 - 0.15 * s * x1**2
    closed_grad = np.cos(x2) * (1 - 0.3 * s * x1) * (1 - 0.3 * s * x0)
    np.testing.assert_allclose(expected_grad, closed_grad, rtol=1e-5)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6)


def test_recomputed_gives_gradients_to_variables_read_inside():
    scale = tf.Variable(2.0)
    step = recomputed(lambda x: [x * scale, x + 1.0])

    @tf.function
    def grads(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            first, _ = step(x)  # the second output is unused: its gradient is None
            loss = tf.reduce_sum(first**2)
        return tape.gradient(loss, [x, scale])

    x = tf.constant([1.0, -3.0])
    for dx, dscale in (grads(x), _eager(step, x, scale)):
        np.testing.assert_allclose(dx, 2 * 4.0 * x.numpy())  # d (s x)^2 / dx = 2 s^2 x
        np.testing.assert_allclose(dscale, 2 * 2.0 * np.sum(x.numpy() ** 2))


def _eager(step, x, scale):
    with tf.GradientTape() as tape:
        tape.watch(x)
        first, _ = step(x)
        loss = tf.reduce_sum(first**2)
    return tape.gradient(loss, [x, scale])


def test_recomputed_compiles_with_xla():
    support = tf.constant([0.5, -1.0, 2.0])
    x = tf.constant([0.3, 0.8, -0.4])

    def value_and_grad(step):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = _two_steps(step, x, support)
        return tape.gradient(loss, x)

    xla = tf.function(lambda: value_and_grad(recomputed(_inner_step)), jit_compile=True)
    np.testing.assert_allclose(xla(), value_and_grad(_inner_step), rtol=1e-5)
