"""Gradient-conflict and training-rate diagnostics of a multi-task model, as a Keras metric."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf
from keras import ops

from tf_mtml.weighting._task_gradients import flatten_task_gradients, safe_divide
from tf_mtml.weighting._validation import check_losses_vector


def task_pairs(task_names: Sequence[str]) -> list[tuple[str, str]]:
    """The unordered task pairs `(a, b)`, `a` before `b` in `task_names`."""
    return [(a, b) for i, a in enumerate(task_names) for b in task_names[i + 1:]]


def pairwise_cosine(task_gradients: Sequence[Sequence]) -> tf.Tensor:
    """Cosine similarity of every pair of task gradients, in `task_pairs` order.

    Args:
        task_gradients: A list over tasks of lists over shared variables of gradients.

    Returns:
        `(K (K - 1) / 2,)` float32; 0 for a pair where a gradient is zero.
    """
    if len(task_gradients) < 2:
        raise ValueError(
            "Pairwise cosines need the gradients of at least 2 tasks. Received "
            f"{len(task_gradients)}.")
    flat = flatten_task_gradients(task_gradients)
    gram = tf.matmul(flat, flat, transpose_b=True)
    norms = tf.sqrt(tf.linalg.diag_part(gram))
    k = flat.shape[0]
    return tf.stack([safe_divide(gram[i, j], norms[i] * norms[j])
                     for i in range(k) for j in range(i + 1, k)])


@keras.saving.register_keras_serializable(package="tf_mtml")
class GradientDiagnostics(keras.metrics.Metric):
    """Mean pairwise cosine of the task gradients and mean task-loss ratios.

    `diagnostics/cos/<a>__<b>` is the mean, over the steps since the last reset, of the
    cosine similarity between tasks `a` and `b`'s gradients on the shared parameters
    (negative: the tasks pull the shared parameters in conflicting directions).
    `diagnostics/loss_ratio/<task>` is the mean of `L_k(t) / L_k(0)`, the task's loss
    relative to its first training step: a task whose ratio stays near 1 while others
    fall is learning more slowly (the imbalance GradNorm and DWA target). `L_k(0)` is
    kept across `reset_state`, so it stays the loss of the first step this metric saw
    (metric state is not in the Trainer's checkpoint: a resumed run restarts it).

    Under a `tf.distribute` strategy every replica must pass the same (all-reduced)
    values; the result is then the single-device one.

    Args:
        task_names: The model's task names, in the order of the loss vectors.
        name: Metric name.

    Call arguments (`update_state`):
        cosines: `(K (K - 1) / 2,)` pairwise cosines, in `task_pairs` order.
        task_losses: `(K,)` global task losses of the step.

    Returns (`result`):
        A flat dict of the values above; NaN before any update (nothing was measured).

    Example:
        ```python
        diagnostics = GradientDiagnostics(["a", "b"])
        diagnostics.update_state(pairwise_cosine(task_grads), ops.stack([l_a, l_b]))
        diagnostics.result()["diagnostics/cos/a__b"]
        ```
    """

    def __init__(self, task_names: Sequence[str], name: str = "gradient_diagnostics",
                 **kwargs):
        super().__init__(name=name, dtype="float32", **kwargs)
        self.task_names = tuple(str(t) for t in task_names)
        if len(self.task_names) < 2 or len(set(self.task_names)) != len(self.task_names):
            raise ValueError(
                "Received an invalid value for `task_names`, expected at least 2 distinct "
                f"task names. Received: task_names={list(self.task_names)}")
        k = len(self.task_names)
        self.pairs = task_pairs(self.task_names)
        self.cosine_sum = self.add_variable((len(self.pairs),), "zeros", name="cosine_sum")
        self.loss_ratio_sum = self.add_variable((k,), "zeros", name="loss_ratio_sum")
        self.count = self.add_variable((), "zeros", name="count")
        # Not summed over replicas: every replica holds the same first-step losses.
        self.initial_losses = self.add_variable((k,), "zeros", name="initial_losses",
                                                aggregation="only_first_replica")
        self.initialized = self.add_variable((), "zeros", name="initialized",
                                             aggregation="only_first_replica")

    def update_state(self, cosines, task_losses):
        check_losses_vector(task_losses, len(self.task_names))
        check_losses_vector(cosines, len(self.pairs))
        losses = ops.cast(task_losses, "float32")
        initial = ops.where(self.initialized > 0, self.initial_losses, losses)
        self.initial_losses.assign(initial)
        self.initialized.assign(1.0)
        self.cosine_sum.assign_add(ops.cast(cosines, "float32"))
        self.loss_ratio_sum.assign_add(safe_divide(losses, initial))
        self.count.assign_add(1.0)

    def reset_state(self):
        for variable in (self.cosine_sum, self.loss_ratio_sum, self.count):
            variable.assign(ops.zeros(variable.shape, variable.dtype))

    def result(self) -> dict:
        nan = float("nan")
        count = ops.where(self.count > 0, self.count, nan)
        cosines = self.cosine_sum / count
        ratios = self.loss_ratio_sum / count
        results = {f"diagnostics/cos/{a}__{b}": cosines[i] for i, (a, b) in enumerate(self.pairs)}
        results.update({f"diagnostics/loss_ratio/{t}": ratios[k]
                         for k, t in enumerate(self.task_names)})
        return results

    def get_config(self):
        return {"name": self.name, "task_names": list(self.task_names)}
