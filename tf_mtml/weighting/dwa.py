"""Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019)."""

from __future__ import annotations

from collections.abc import Mapping

import keras
from keras import ops

from tf_mtml.weighting._validation import check_losses_vector, check_positive, check_task_weights
from tf_mtml.weighting.static import check_task_names


def dwa_weights(previous, before_previous, temperature: float):
    """`w_k = K softmax_k(r_k / T)` with the descent rates `r_k = L_k(t-1) / L_k(t-2)`.

    A task whose loss fell less (ratio near or above 1) gets more weight. A ratio with a
    zero denominator counts as 1.

    Args:
        previous: `(K,)` mean task losses of the last period, `L(t-1)`.
        before_previous: `(K,)` mean task losses of the period before, `L(t-2)`.
        temperature: `T > 0`; a large `T` gives uniform weights.

    Returns:
        `(K,)` weights summing to `K`.
    """
    previous = ops.cast(previous, "float32")
    before_previous = ops.cast(before_previous, "float32")
    ratios = ops.where(before_previous > 0,
                       previous / ops.where(before_previous > 0, before_previous, 1.0), 1.0)
    return ops.cast(ops.shape(ratios)[0], "float32") * ops.softmax(ratios / temperature)


@keras.saving.register_keras_serializable(package="tf_mtml")
class DynamicWeightAverage(keras.layers.Layer):
    """Weights each task by how slowly its loss has been falling (DWA).

    Liu et al., "End-to-End Multi-Task Learning with Attention", CVPR 2019,
    https://arxiv.org/abs/1803.10704, eq. 7: `w_k(t) = K exp(r_k(t-1)/T) / sum_i
    exp(r_i(t-1)/T)`, `r_k(t-1) = L_k(t-1) / L_k(t-2)`, where `L_k(t)` is task `k`'s mean
    training loss over period `t`. The paper's period is an epoch; here it is
    `period_steps` training steps (set it to the steps per epoch for the paper's rule). The
    weights are 1 until two periods have completed. The total loss is
    `sum_k w_k * p_k * L_k` with `p_k` the prior task weights.

    The state (weights, running sums, the last two period means) lives in non-trainable
    variables, so it is checkpointed; `update_weights` advances it once per training step.

    Args:
        task_weights: `{task_name: prior weight >= 0}` (the `TaskSpec` weights).
        temperature: `T > 0` (the paper uses 2).
        period_steps: Training steps per averaging period, `>= 1`.

    Call arguments:
        task_losses: `{task_name: scalar loss}` with exactly the configured tasks.
        num_replicas: Unused (every term depends on the data); kept for a uniform interface.

    Returns:
        The scalar total loss.

    Example:
        ```python
        weighting = DynamicWeightAverage({"a": 1.0, "b": 1.0}, period_steps=128)
        total = weighting({"a": l1, "b": l2})
        weighting.update_weights(ops.stack([global_l1, global_l2]))  # after the step
        ```
    """

    def __init__(self, task_weights: Mapping[str, float], temperature: float = 2.0,
                 period_steps: int = 100, **kwargs):
        super().__init__(**kwargs)
        self.task_weights = check_task_weights(task_weights)
        self.temperature = float(check_positive("temperature", temperature))
        self.period_steps = check_positive("period_steps", period_steps, integer=True)
        k = len(self.task_weights)
        state = {"trainable": False, "aggregation": "only_first_replica", "autocast": False,
                 "dtype": "float32"}
        self.loss_weights = self.add_weight(shape=(k,), initializer="ones", name="loss_weights",
                                            **state)
        self.period_loss_sum = self.add_weight(shape=(k,), initializer="zeros",
                                               name="period_loss_sum", **state)
        # Row 0: L(t-2), row 1: L(t-1).
        self.period_means = self.add_weight(shape=(2, k), initializer="zeros",
                                            name="period_means", **state)
        state["dtype"] = "int32"
        self.period_step = self.add_weight(shape=(), initializer="zeros", name="period_step",
                                           **state)
        self.num_periods = self.add_weight(shape=(), initializer="zeros", name="num_periods",
                                           **state)
        self.built = True

    def call(self, task_losses, num_replicas: int = 1):
        check_task_names(task_losses, self.task_weights)
        weighted = [self.loss_weights[i] * p * ops.cast(task_losses[name], "float32")
                    for i, (name, p) in enumerate(self.task_weights.items())]
        return ops.sum(ops.stack(weighted))

    def update_weights(self, task_losses) -> None:
        """Adds one step's global task losses `(K,)`; recomputes the weights after a period."""
        check_losses_vector(task_losses, len(self.task_weights))
        loss_sum = self.period_loss_sum + ops.cast(task_losses, "float32")
        step = self.period_step + 1
        done = step >= self.period_steps
        means = ops.where(done, ops.stack([self.period_means[1], loss_sum / self.period_steps]),
                          self.period_means)
        num_periods = self.num_periods + ops.cast(done, "int32")
        new_weights = dwa_weights(means[1], means[0], self.temperature)
        self.loss_weights.assign(
            ops.where(ops.logical_and(done, num_periods >= 2), new_weights, self.loss_weights))
        self.period_means.assign(means)
        self.num_periods.assign(num_periods)
        self.period_loss_sum.assign(ops.where(done, ops.zeros_like(loss_sum), loss_sum))
        self.period_step.assign(ops.where(done, 0, step))

    def effective_weights(self) -> dict[str, float]:
        """The weight currently multiplying each task's loss (DWA weight times prior)."""
        w = ops.convert_to_numpy(self.loss_weights)
        return {name: float(w[i] * p) for i, (name, p) in enumerate(self.task_weights.items())}

    def get_config(self):
        return {**super().get_config(), "task_weights": self.task_weights,
                "temperature": self.temperature, "period_steps": self.period_steps}
