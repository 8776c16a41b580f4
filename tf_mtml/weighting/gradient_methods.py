"""Selects a gradient-level method (PCGrad, CAGrad, MGDA) as a model's weighting."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras
import tensorflow as tf

from tf_mtml.weighting._validation import check_positive, check_seed
from tf_mtml.weighting.cagrad import cagrad
from tf_mtml.weighting.mgda import mgda
from tf_mtml.weighting.pcgrad import pcgrad
from tf_mtml.weighting.static import StaticWeighting

GRADIENT_METHODS = ("pcgrad", "cagrad", "mgda")


@keras.saving.register_keras_serializable(package="tf_mtml")
class GradientWeighting(StaticWeighting):
    """A static loss weighting whose shared-parameter gradients are combined by a method.

    As a loss it is `StaticWeighting`: `sum_k p_k L_k` with the prior task weights `p_k`
    (what the model reports and evaluates). The multi-task training step sees this layer
    and, instead of differentiating that sum, computes the gradient of every task's
    `p_k L_k`, sums each over the replicas, combines them on the shared parameters with
    `combine` and gives every task-specific parameter its own task's gradient.

    Args:
        method: `"pcgrad"`, `"cagrad"` or `"mgda"`.
        task_weights: `{task_name: prior weight >= 0}` (the `TaskSpec` weights).
        cagrad_c: CAGrad's `c >= 0`.
        seed: Integer seed of PCGrad's random task orders.
        max_iterations: Frank-Wolfe iterations at most (CAGrad, MGDA with > 2 tasks).

    Example:
        ```python
        model = MultiTaskModel(network, tasks,
                               weighting=GradientWeighting("pcgrad", {"a": 1.0, "b": 1.0}))
        ```
    """

    def __init__(self, method: str, task_weights: Mapping[str, float], cagrad_c: float = 0.5,
                 seed: int = 0, max_iterations: int = 250, **kwargs):
        super().__init__(task_weights, **kwargs)
        if method not in GRADIENT_METHODS:
            raise ValueError(
                f"Received an invalid value for `method`, expected one of {GRADIENT_METHODS}. "
                f"Received: method={method!r}")
        if isinstance(cagrad_c, bool) or not isinstance(cagrad_c, int | float) \
                or not cagrad_c >= 0:
            raise ValueError(
                "Received an invalid value for `cagrad_c`, expected a number >= 0. "
                f"Received: cagrad_c={cagrad_c!r}")
        self.method = method
        self.cagrad_c = float(cagrad_c)
        self.seed = check_seed(seed)
        self.max_iterations = check_positive("max_iterations", max_iterations, integer=True)

    def combine(self, task_gradients: Sequence[Sequence], step=0) -> list[tf.Tensor]:
        """Combines `task_gradients` (tasks x shared variables) into one gradient per variable.

        Args:
            task_gradients: The gradients of every task's weighted loss, summed over replicas.
            step: The training step; seeds PCGrad's task orders with `(seed, step)`.
        """
        if self.method == "pcgrad":
            seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(step, tf.int64)])
            return pcgrad(task_gradients, seed)
        if self.method == "cagrad":
            return cagrad(task_gradients, self.cagrad_c, self.max_iterations)
        return mgda(task_gradients, self.max_iterations)

    def get_config(self):
        return {**super().get_config(), "method": self.method, "cagrad_c": self.cagrad_c,
                "seed": self.seed, "max_iterations": self.max_iterations}
