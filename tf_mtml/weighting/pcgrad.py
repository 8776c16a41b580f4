"""PCGrad: projecting conflicting gradients (Yu et al., NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tf_mtml.weighting._task_gradients import flatten_task_gradients, safe_divide, unflatten_like


def pcgrad_task_order(num_tasks: int, seed) -> tf.Tensor:
    """`(num_tasks, num_tasks)` int32: row `i` is the random order in which task `i` visits
    the tasks (its own index included, and skipped by `pcgrad`).

    Args:
        num_tasks: Number of tasks.
        seed: A stateless seed, shape `(2,)` integers; the same seed gives the same order.
    """
    keys = tf.random.stateless_uniform((num_tasks, num_tasks), seed=seed)
    return tf.argsort(keys, axis=1)


def pcgrad(task_gradients: Sequence[Sequence], seed) -> list[tf.Tensor]:
    """Projects each task's gradient off the normal planes of the gradients it conflicts with.

    Yu et al., "Gradient Surgery for Multi-Task Learning", NeurIPS 2020,
    https://arxiv.org/abs/2001.06782, Algorithm 1: for every task `i`, start from
    `g_i^PC = g_i` and visit the other tasks `j` in a random order; when
    `g_i^PC . g_j < 0`, set `g_i^PC -= (g_i^PC . g_j) / |g_j|^2 * g_j` (`g_j` the original
    gradient). The update is `sum_i g_i^PC`, so without conflicts it is the gradient of the
    summed losses.

    Args:
        task_gradients: A list over tasks of lists over shared variables of gradients.
        seed: Stateless seed `(2,)` of the random task orders (e.g. `(seed, step)`), so
            every replica draws the same orders.

    Returns:
        One combined gradient per shared variable.

    Example:
        ```python
        shared_grads = pcgrad([tape.gradient(l, shared) for l in task_losses], seed=(0, step))
        ```
    """
    flat = flatten_task_gradients(task_gradients)
    num_tasks = flat.shape[0]
    order = pcgrad_task_order(num_tasks, seed)
    squared_norms = tf.reduce_sum(flat * flat, axis=1)
    projected = []
    for i in range(num_tasks):
        g = flat[i]
        for position in range(num_tasks):
            j = order[i, position]
            g_j = tf.gather(flat, j)
            dot = tf.tensordot(g, g_j, 1)
            conflict = tf.logical_and(tf.not_equal(j, i), dot < 0)
            g = g - tf.where(conflict, safe_divide(dot, tf.gather(squared_norms, j)), 0.0) * g_j
        projected.append(g)
    return unflatten_like(tf.add_n(projected), task_gradients[0])
