"""Helpers shared by the gradient-level methods: stacked task gradients and simplex solves.

A gradient-level method receives `task_gradients`, a list over tasks of lists over shared
variables. It works on the `(num_tasks, n)` matrix of flattened gradients, usually only
through its Gram matrix, and returns one gradient per variable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

_TINY = 1e-20


def check_task_gradients(task_gradients: Sequence[Sequence]) -> None:
    """Raises a ValueError unless `task_gradients` is tasks x variables, with no `None`."""
    sizes = {len(g) for g in task_gradients}
    if not task_gradients or len(sizes) != 1 or 0 in sizes:
        raise ValueError(
            "Received an invalid value for `task_gradients`, expected a non-empty list over "
            "tasks of equally long, non-empty lists over the shared variables. Received "
            f"lists of lengths {[len(g) for g in task_gradients]}."
        )
    missing = [(k, v) for k, grads in enumerate(task_gradients)
               for v, g in enumerate(grads) if g is None]
    if missing:
        raise ValueError(
            f"`task_gradients` has no gradient (None) at (task, variable) {missing[:5]}. A "
            "shared variable must receive a gradient from every task; pass zeros for a task "
            "that does not use it, or leave the variable out of the shared set."
        )


def flatten_task_gradients(task_gradients: Sequence[Sequence]) -> tf.Tensor:
    """`(num_tasks, n)` float32 matrix: each task's gradients flattened and concatenated."""
    check_task_gradients(task_gradients)
    return tf.stack([
        tf.concat([tf.reshape(tf.cast(tf.convert_to_tensor(g), tf.float32), (-1,))
                   for g in grads], axis=0)
        for grads in task_gradients])


def unflatten_like(flat: tf.Tensor, like: Sequence) -> list[tf.Tensor]:
    """Splits the vector `flat` into tensors shaped and typed like the gradients `like`
    (whose shapes, those of variables, are static)."""
    like = [tf.convert_to_tensor(g) for g in like]
    parts = tf.split(flat, [g.shape.num_elements() for g in like])
    return [tf.cast(tf.reshape(p, g.shape), g.dtype) for p, g in zip(parts, like, strict=True)]


def combine_rows(coefficients: tf.Tensor, flat: tf.Tensor, like: Sequence) -> list[tf.Tensor]:
    """`sum_k coefficients[k] * flat[k]`, reshaped like the gradients `like`."""
    return unflatten_like(tf.linalg.matvec(flat, coefficients, transpose_a=True), like)


def pairwise_frank_wolfe(gradient_fn: Callable[[tf.Tensor], tf.Tensor],
                         segment_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
                         num_tasks: int, max_iterations: int, tolerance: tf.Tensor) -> tf.Tensor:
    """Minimises a convex function `F` over the probability simplex (pairwise Frank-Wolfe).

    Starts at the uniform weights. Each iteration finds the Frank-Wolfe vertex
    `t = argmin_r dF/dw_r` and the away vertex `s`, the weighted task with the largest
    partial derivative, and moves weight from `s` to `t`:
    `w <- w + x * w_s (e_t - e_s)` with the exact line-search step
    `x = segment_fn(w, w + w_s (e_t - e_s))` in `[0, 1]`. Unlike plain Frank-Wolfe it can
    drop a vertex entirely, which makes it converge linearly on min-norm problems
    (Lacoste-Julien & Jaggi, NeurIPS 2015). Stops when the Frank-Wolfe duality gap
    `w . grad - grad_t` (an upper bound on `F(w) - min F`) is at most `tolerance`, or after
    `max_iterations` iterations.

    Args:
        gradient_fn: `w -> dF/dw`, `(num_tasks,)`.
        segment_fn: `(w_from, w_to) -> x`, the minimiser of `F((1 - x) w_from + x w_to)`
            over `x` in `[0, 1]`.
        num_tasks: `K`.
        max_iterations: Iterations at most.
        tolerance: Duality gap at which to stop.

    Returns:
        The `(num_tasks,)` float32 weights.
    """
    start = tf.fill((num_tasks,), 1.0 / num_tasks)

    def keep_going(i, weights, gap):
        return tf.logical_and(i < max_iterations, gap > tolerance)

    def step(i, weights, gap):
        grad = gradient_fn(weights)
        toward = tf.argmin(grad, output_type=tf.int32)
        away = tf.argmax(tf.where(weights > 0, grad, -float("inf")), output_type=tf.int32)
        gap = tf.tensordot(weights, grad, 1) - grad[toward]
        target = weights + weights[away] * (tf.one_hot(toward, num_tasks)
                                            - tf.one_hot(away, num_tasks))
        x = segment_fn(weights, target)
        return i + 1, weights + x * (target - weights), gap

    _, weights, _ = tf.while_loop(
        keep_going, step, (tf.constant(0), start, tf.constant(float("inf"))))
    return weights


def safe_divide(x, y):
    """`x / y`, and 0 where `|y|` is (nearly) 0."""
    safe = tf.abs(y) > _TINY
    return tf.where(safe, x / tf.where(safe, y, 1.0), tf.zeros_like(x))
