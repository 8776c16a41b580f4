"""MGDA: the min-norm point in the convex hull of the task gradients (Sener & Koltun 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tf_mtml.weighting._task_gradients import (
    combine_rows,
    flatten_task_gradients,
    pairwise_frank_wolfe,
    safe_divide,
)


def min_norm_segment(aa, ab, bb):
    """Weight `x` on `a` of the min-norm point `x a + (1 - x) b` of the segment `[a, b]`.

    With `aa = a.a`, `ab = a.b`, `bb = b.b`: `x = clip(((b - a).b) / |a - b|^2, 0, 1)`
    (0.5 when `a == b`, where every point is the same).
    """
    denominator = aa - 2.0 * ab + bb
    return tf.where(denominator > 0, tf.clip_by_value(safe_divide(bb - ab, denominator), 0.0, 1.0),
                    0.5)


def min_norm_weights(gram: tf.Tensor, max_iterations: int = 250,
                     tolerance: float = 1e-6) -> tf.Tensor:
    """The simplex weights `alpha` minimising `|sum_k alpha_k g_k|^2`, from the Gram matrix.

    Two tasks: the closed form `alpha = (gamma, 1 - gamma)`,
    `gamma = clip(((g2 - g1).g2) / |g1 - g2|^2, 0, 1)`. More tasks: Frank-Wolfe with exact
    line search as in Sener & Koltun's Algorithm 2, in its pairwise variant (which
    converges linearly here), until the duality gap is at most
    `tolerance * max_k |g_k|^2` or for `max_iterations` iterations.

    Args:
        gram: `(K, K)` Gram matrix `g_i . g_j` of the task gradients.
        max_iterations: Frank-Wolfe iterations at most (K > 2).
        tolerance: Relative duality gap at which Frank-Wolfe stops (K > 2).

    Returns:
        `(K,)` float32 weights, non-negative, summing to 1.
    """
    gram = tf.cast(gram, tf.float32)
    num_tasks = gram.shape[0]
    if num_tasks == 1:
        return tf.ones((1,))
    if num_tasks == 2:
        gamma = min_norm_segment(gram[0, 0], gram[0, 1], gram[1, 1])
        return tf.stack([gamma, 1.0 - gamma])

    def gradient(weights):  # of 0.5 * w^T M w
        return tf.linalg.matvec(gram, weights)

    def segment(w_from, w_to):
        m_to = tf.linalg.matvec(gram, w_to)
        return min_norm_segment(tf.tensordot(w_to, m_to, 1), tf.tensordot(w_from, m_to, 1),
                                tf.tensordot(w_from, tf.linalg.matvec(gram, w_from), 1))

    scale = tf.reduce_max(tf.linalg.diag_part(gram))
    return pairwise_frank_wolfe(gradient, segment, num_tasks, max_iterations, tolerance * scale)


def mgda(task_gradients: Sequence[Sequence], max_iterations: int = 250,
         tolerance: float = 1e-6) -> list[tf.Tensor]:
    """Multiple-gradient descent: the min-norm convex combination of the task gradients.

    Sener & Koltun, "Multi-Task Learning as Multi-Objective Optimization", NeurIPS 2018,
    https://arxiv.org/abs/1810.04650. The minimum-norm point `d = sum_k alpha_k g_k` of the
    convex hull of the task gradients is a descent direction for every task (or zero at a
    Pareto-stationary point). This is MGDA on the gradients of the shared parameters (not
    the MGDA-UB bound on a representation); the weights sum to 1, so `d` is on the scale of
    the average gradient.

    Args:
        task_gradients: A list over tasks of lists over shared variables of gradients.
        max_iterations: Frank-Wolfe iterations at most (more than 2 tasks).
        tolerance: Relative duality gap at which Frank-Wolfe stops.

    Returns:
        One combined gradient per shared variable.

    Example:
        ```python
        shared_grads = mgda([tape.gradient(l, shared) for l in task_losses])
        ```
    """
    flat = flatten_task_gradients(task_gradients)
    gram = tf.matmul(flat, flat, transpose_b=True)
    weights = min_norm_weights(gram, max_iterations, tolerance)
    return combine_rows(weights, flat, task_gradients[0])
