"""Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
from keras import ops

from tf_mtml.weighting.static import check_task_names

_TYPES = ("regression", "binary", "multiclass")


@keras.saving.register_keras_serializable(package="tf_mtml")
class UncertaintyWeighting(keras.layers.Layer):
    """Learns one log-variance `s_k = log sigma_k^2` per task and weights losses by it.

    Following Kendall et al. 2018 (https://arxiv.org/abs/1705.07115), eq. 7 and 10:
    a regression task contributes `0.5 * exp(-s_k) * L_k + 0.5 * s_k` and a classification
    task `exp(-s_k) * L_k + 0.5 * s_k`. A task whose loss stays large learns a large
    `s_k` and so a small weight; the `0.5 * s_k` term keeps `s_k` from growing without bound.
    The optimum for a fixed regression loss is `s_k = log L_k`.

    Args:
        task_types: `{task_name: "regression" | "binary" | "multiclass"}`.
        initial_log_variance: Initial `s_k` for every task (0 gives weight 1 or 0.5).

    Call arguments:
        task_losses: `{task_name: scalar loss}` with exactly the configured tasks.
        num_replicas: Replicas the loss is split over: the `0.5 * s_k` terms do not depend
            on the data, so each replica adds `1 / num_replicas` of them and the sum over
            replicas is exact.

    Returns:
        The scalar total loss.
    """

    def __init__(self, task_types: Mapping[str, str], initial_log_variance: float = 0.0,
                 **kwargs):
        super().__init__(**kwargs)
        task_types = {str(k): str(v) for k, v in dict(task_types).items()}
        bad = {k: v for k, v in task_types.items() if v not in _TYPES}
        if not task_types or bad:
            raise ValueError(
                "Received an invalid value for `task_types`, expected a non-empty mapping of "
                f"task names to one of {_TYPES}. Received: task_types={task_types}"
            )
        self.task_types = task_types
        self.initial_log_variance = float(initial_log_variance)
        self.log_variance = self.add_weight(
            shape=(len(task_types),),
            initializer=keras.initializers.Constant(self.initial_log_variance),
            dtype="float32",
            name="log_variance",
        )
        self.built = True

    def call(self, task_losses, num_replicas: int = 1):
        check_task_names(task_losses, self.task_types)
        total = 0.0
        for i, (name, task_type) in enumerate(self.task_types.items()):
            s = self.log_variance[i]
            scale = 0.5 if task_type == "regression" else 1.0
            loss = ops.cast(task_losses[name], "float32")
            total = total + scale * ops.exp(-s) * loss + 0.5 * s / num_replicas
        return total

    def effective_weights(self) -> dict[str, float]:
        """The weight currently multiplying each task's loss."""
        s = keras.ops.convert_to_numpy(self.log_variance)
        return {
            name: float((0.5 if t == "regression" else 1.0) * math.exp(-s[i]))
            for i, (name, t) in enumerate(self.task_types.items())
        }

    def get_config(self):
        return {**super().get_config(), "task_types": self.task_types,
                "initial_log_variance": self.initial_log_variance}
