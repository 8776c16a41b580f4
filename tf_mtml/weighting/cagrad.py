"""CAGrad: conflict-averse gradient descent (Liu et al., NeurIPS 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tf_mtml.weighting._task_gradients import (
    combine_rows,
    flatten_task_gradients,
    pairwise_frank_wolfe,
    safe_divide,
)


def cagrad_segment(aa, ab, bb, a_g0, b_g0, radius):
    """Weight `x` on `a` minimising `F(x) = g_x . g0 + radius * |g_x|`, `g_x = x a + (1-x) b`.

    `F` is convex in `x`; its stationary point solves
    `(a - b).g0 + radius * (A x + B) / sqrt(A x^2 + 2 B x + C) = 0` with `A = |a - b|^2`,
    `B = (a - b).b`, `C = |b|^2`. Writing `u = A x + B` and `D = A C - B^2 >= 0` it is
    `u = k sqrt(D / (A - k^2))` for `k = -(a - b).g0 / radius` when `k^2 < A`; otherwise `F`
    is monotone and the minimum is at an end. The result is clipped to `[0, 1]`.
    """
    q = a_g0 - b_g0
    big_a = aa - 2.0 * ab + bb
    big_b = ab - bb
    big_d = tf.maximum(big_a * bb - big_b * big_b, 0.0)
    k = safe_divide(-q, radius)
    interior = tf.sqrt(tf.maximum(safe_divide(big_d, big_a - k * k), 0.0))
    stationary = safe_divide(k * interior - big_b, big_a)
    monotone = tf.where(radius > 0, k * k >= big_a, tf.ones_like(k, tf.bool))
    # F decreases on the whole segment exactly when -q >= radius * sqrt(A) (or q < 0 if r=0).
    end = tf.where(tf.logical_or(k > 0, tf.logical_and(radius <= 0, q < 0)), 1.0, 0.0)
    x = tf.where(monotone, end, stationary)
    return tf.where(big_a > 0, tf.clip_by_value(x, 0.0, 1.0), 0.5)


def cagrad_weights(gram: tf.Tensor, c: float, max_iterations: int = 250,
                   tolerance: float = 1e-6) -> tf.Tensor:
    """The dual weights `w` of CAGrad, from the Gram matrix of the task gradients.

    Minimises `F(w) = g_w . g0 + c |g0| |g_w|` over the simplex, `g_w = sum_k w_k g_k`,
    `g0` the average gradient (eq. 6 of the paper). Two tasks: the closed form of
    `cagrad_segment`. More tasks: pairwise Frank-Wolfe whose exact line search is the same
    closed form on the segment it moves along; it stops at a duality gap of
    `tolerance * max_k |g_k|^2` or after `max_iterations` iterations.

    Returns:
        `(K,)` float32 weights, non-negative, summing to 1.
    """
    gram = tf.cast(gram, tf.float32)
    num_tasks = gram.shape[0]
    if num_tasks == 1:
        return tf.ones((1,))
    mean_gram = tf.reduce_mean(gram, axis=1)  # g_k . g0
    radius = c * tf.sqrt(tf.maximum(tf.reduce_mean(gram), 0.0))  # c |g0|
    if num_tasks == 2:
        x = cagrad_segment(gram[0, 0], gram[0, 1], gram[1, 1], mean_gram[0], mean_gram[1],
                           radius)
        return tf.stack([x, 1.0 - x])

    def gradient(weights):
        gram_w = tf.linalg.matvec(gram, weights)
        norm = tf.sqrt(tf.maximum(tf.tensordot(weights, gram_w, 1), 0.0))
        return mean_gram + radius * safe_divide(gram_w, norm)

    def segment(w_from, w_to):
        m_to = tf.linalg.matvec(gram, w_to)
        return cagrad_segment(tf.tensordot(w_to, m_to, 1), tf.tensordot(w_from, m_to, 1),
                              tf.tensordot(w_from, tf.linalg.matvec(gram, w_from), 1),
                              tf.tensordot(w_to, mean_gram, 1),
                              tf.tensordot(w_from, mean_gram, 1), radius)

    scale = tf.reduce_max(tf.linalg.diag_part(gram))
    return pairwise_frank_wolfe(gradient, segment, num_tasks, max_iterations, tolerance * scale)


def cagrad(task_gradients: Sequence[Sequence], c: float = 0.5, max_iterations: int = 250,
           tolerance: float = 1e-6) -> list[tf.Tensor]:
    """Conflict-averse gradient: the best worst-task improvement near the average gradient.

    Liu et al., "Conflict-Averse Gradient Descent for Multi-task Learning", NeurIPS 2021,
    https://arxiv.org/abs/2110.14048. With `g0` the average gradient and `w` the dual
    weights of `cagrad_weights`, the update is
    `d = (g0 + c |g0| g_w / |g_w|) / (1 + c^2)` (the division by `1 + c^2` is the official
    implementation's default rescaling). `c = 0` gives the average gradient; a larger `c`
    moves further towards improving the worst task.

    Args:
        task_gradients: A list over tasks of lists over shared variables of gradients.
        c: The radius of the ball around `g0` in units of `|g0|`, `>= 0`.
        max_iterations: Frank-Wolfe iterations at most (more than 2 tasks).
        tolerance: Relative duality gap at which Frank-Wolfe stops.

    Returns:
        One combined gradient per shared variable.

    Example:
        ```python
        shared_grads = cagrad([tape.gradient(l, shared) for l in task_losses], c=0.4)
        ```
    """
    if not c >= 0:
        raise ValueError(
            f"Received an invalid value for `c`, expected a number >= 0. Received: c={c}")
    flat = flatten_task_gradients(task_gradients)
    gram = tf.matmul(flat, flat, transpose_b=True)
    num_tasks = gram.shape[0]
    weights = cagrad_weights(gram, c, max_iterations, tolerance)
    radius = c * tf.sqrt(tf.maximum(tf.reduce_mean(gram), 0.0))
    norm_w = tf.sqrt(tf.maximum(tf.tensordot(weights, tf.linalg.matvec(gram, weights), 1), 0.0))
    coefficients = 1.0 / num_tasks + safe_divide(radius, norm_w) * weights
    return combine_rows(coefficients / (1.0 + c * c), flat, task_gradients[0])
