"""Fast weights: run any Keras model on parameter tensors instead of its variables.

Gradient-based meta-learners (MAML, Meta-SGD, Reptile, the LSTM meta-optimizer) adapt a copy
of the parameters on an episode's support set and evaluate the adapted copy on its query set.
`model.stateless_call` runs the model on given values without touching its variables, so any
Keras model works unchanged, and an outer `tf.GradientTape` that watches the variables
differentiates through the inner updates (second order) unless they are stopped (first order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf


def trainable_values(model: keras.Model) -> list[tf.Tensor]:
    """The current values of `model.trainable_variables` (reads, recorded by active tapes)."""
    return [tf.convert_to_tensor(v) for v in model.trainable_variables]


def non_trainable_values(model: keras.Model) -> list[tf.Tensor]:
    """The current values of `model.non_trainable_variables` (BatchNorm statistics, seeds)."""
    return [tf.convert_to_tensor(v) for v in model.non_trainable_variables]


def functional_call(model: keras.Model, params: Sequence[tf.Tensor], x, training: bool = False,
                    non_trainable: Sequence[tf.Tensor] | None = None):
    """`model(x)` computed with `params` in place of its trainable variables.

    Updates of non-trainable state (BatchNorm moving statistics) are discarded: adaptation on
    one episode must not change the model.

    Args:
        model: A built Keras model.
        params: One tensor per `model.trainable_variables`, same order and shapes.
        x: The model's inputs.
        training: Passed to `call` (BatchNorm uses batch statistics when True).
        non_trainable: Values of the non-trainable variables; their current values if None.

    Returns:
        The model's outputs.
    """
    if len(params) != len(model.trainable_variables):
        raise ValueError(
            f"Received {len(params)} parameter tensors for model {model.name!r}, which has "
            f"{len(model.trainable_variables)} trainable variables. Pass one tensor per "
            "variable, in the order of `model.trainable_variables`."
        )
    if non_trainable is None:
        non_trainable = non_trainable_values(model)
    outputs, _ = model.stateless_call(list(params), list(non_trainable), x, training=training)
    return outputs


def gradient_step(loss_fn: Callable[[list[tf.Tensor]], tf.Tensor], params: Sequence[tf.Tensor],
                  learning_rates, first_order: bool = False):
    """One gradient-descent step on fast weights: `params - lr * grad(loss_fn)(params)`.

    Args:
        loss_fn: Maps a list of parameter tensors to a scalar loss.
        params: The current fast weights.
        learning_rates: A scalar, or one tensor per parameter (Meta-SGD: same shapes).
        first_order: Stop gradients through the inner gradient (first-order MAML), so an outer
            tape sees `d params_new / d params = I`.

    Returns:
        `(new_params, loss)`.
    """
    params = list(params)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(params)
        loss = loss_fn(params)
    grads = tape.gradient(loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    if first_order:
        grads = [tf.stop_gradient(g) for g in grads]
    if isinstance(learning_rates, (list, tuple)):
        new_params = [p - lr * g for p, lr, g in zip(params, learning_rates, grads, strict=True)]
    else:
        new_params = [p - learning_rates * g for p, g in zip(params, grads, strict=True)]
    return new_params, loss


def recomputed(step: Callable[..., Sequence[tf.Tensor]]) -> Callable[..., list[tf.Tensor]]:
    """Wraps `step` as a gradient checkpoint that may itself take gradients (an inner step).

    The forward pass keeps only the inputs of `step` for the backward pass, which runs `step`
    again under a tape and back-propagates through the recomputation. Chaining `K` recomputed
    inner steps thus keeps `K` parameter sets instead of `K` sets of activations and of
    inner-gradient intermediates, for the same meta-gradient.

    `tf.recompute_grad` cannot do this: it runs its function with recording stopped on the
    whole thread, so a tape opened inside records nothing and an inner gradient step silently
    returns its inputs unchanged. Here the forward pass runs on `tf.stop_gradient` copies of the
    inputs instead: enclosing tapes record none of it, while tapes opened inside `step` watch
    the copies as usual. In graph mode the recomputation is made to depend on the incoming
    gradient through data (XLA ignores control dependencies), so it runs in the backward pass
    and is not merged with the forward pass by graph optimizers.

    Args:
        step: A function of tensors returning a list of tensors. Variables that it reads
            directly (not through its inputs) receive gradients too.

    Returns:
        A function with the outputs of `step` and a recomputing gradient. It can be
        differentiated once (second-order MAML's meta-gradient), not twice.

    Example:

    >>> double = recomputed(lambda x: [2.0 * x])
    >>> x = tf.constant(3.0)
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(x)
    ...     (y,) = double(x)
    >>> float(tape.gradient(y, x))
    2.0
    """

    @tf.custom_gradient
    def checkpointed(*inputs):
        outputs = list(step(*[tf.stop_gradient(x) for x in inputs]))

        def grad_fn(*upstream, variables=None):
            upstream = [tf.zeros_like(o) if g is None else g
                        for o, g in zip(outputs, upstream, strict=True)]
            variables = list(variables or [])
            replay = [tf.identity(x) for x in inputs]
            if not tf.executing_eagerly():
                # Always 0 (a NaN casts to True), but only known once `upstream` is computed.
                first = tf.reduce_max(tf.reshape(upstream[0], [-1])[:1])
                flag = tf.cast(first, tf.bool)
                after_upstream = tf.where(tf.equal(flag, flag), 0.0, float("nan"))
                replay = [x + tf.cast(after_upstream, x.dtype) for x in replay]
            with tf.GradientTape() as tape:
                tape.watch(replay)
                tape.watch(variables)
                recomputed_outputs = list(step(*replay))
            grads = tape.gradient(recomputed_outputs, replay + variables,
                                  output_gradients=upstream,
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            if variables:
                return grads[:len(replay)], grads[len(replay):]
            return grads

        return outputs, grad_fn

    # AutoGraph would convert the undecorated function, dropping the custom gradient.
    return tf.autograph.experimental.do_not_convert(checkpointed)
