"""Static loss weighting: a fixed weighted sum of task losses."""

from __future__ import annotations

from collections.abc import Mapping

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tf_mtml")
class StaticWeighting(keras.layers.Layer):
    """Combines task losses as `sum_k w_k * L_k` with fixed weights.

    Args:
        task_weights: `{task_name: weight}`, weights >= 0.

    Call arguments:
        task_losses: `{task_name: scalar loss}` with exactly the configured tasks.
        num_replicas: Replicas the loss is split over (terms that do not depend on the
            data are divided by it); unused here, kept for a uniform interface.

    Returns:
        The scalar total loss.

    Example:
        ```python
        weighting = StaticWeighting({"income": 1.0, "marital": 0.5})
        total = weighting({"income": l1, "marital": l2})
        ```
    """

    def __init__(self, task_weights: Mapping[str, float], **kwargs):
        super().__init__(**kwargs)
        task_weights = {str(k): float(v) for k, v in dict(task_weights).items()}
        bad = {k: v for k, v in task_weights.items() if not v >= 0}
        if not task_weights or bad:
            raise ValueError(
                "Received an invalid value for `task_weights`, expected a non-empty mapping of "
                f"task names to weights >= 0. Received: task_weights={task_weights}"
            )
        self.task_weights = task_weights
        self.built = True

    def call(self, task_losses, num_replicas: int = 1):
        check_task_names(task_losses, self.task_weights)
        weighted = [self.task_weights[k] * task_losses[k] for k in self.task_weights]
        return ops.sum(ops.stack(weighted))

    def effective_weights(self) -> dict[str, float]:
        """The weight currently multiplying each task's loss."""
        return dict(self.task_weights)

    def get_config(self):
        return {**super().get_config(), "task_weights": self.task_weights}


def check_task_names(task_losses: Mapping, expected: Mapping) -> None:
    """Raises a ValueError naming the difference when the task names do not match."""
    if set(task_losses) != set(expected):
        raise ValueError(
            f"Received losses for tasks {sorted(task_losses)}, but the weighting was configured "
            f"for {sorted(expected)}. Build the weighting with the model's task names."
        )
