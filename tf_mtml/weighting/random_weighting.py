"""Random loss weighting (Lin et al., TMLR 2022)."""

from __future__ import annotations

from collections.abc import Mapping

import keras
import tensorflow as tf
from keras import ops

from tf_mtml.weighting._validation import check_seed, check_task_weights
from tf_mtml.weighting.static import check_task_names


def random_loss_weights(num_tasks: int, seed) -> tf.Tensor:
    """`K * softmax(z)`, `z ~ N(0, I_K)` drawn statelessly from `seed` (shape `(2,)`).

    The paper's weights sum to 1; they are scaled by `K` here so that their mean is 1 like
    the static default, which keeps the loss (and an SGD step) on the same scale.
    """
    z = tf.random.stateless_normal((num_tasks,), seed=tf.cast(seed, tf.int64))
    return float(num_tasks) * tf.nn.softmax(z)


@keras.saving.register_keras_serializable(package="tf_mtml")
class RandomLossWeighting(keras.layers.Layer):
    """Weights the task losses by fresh random weights at every training step (RLW).

    Lin et al., "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task
    Learning", TMLR 2022, https://arxiv.org/abs/2111.10603: the weights are the softmax of
    a standard normal sample (see `random_loss_weights` for the `K` scaling). The draw for
    step `s` is a stateless function of `(seed, s)`, so a run is reproducible and every
    replica of a distributed run uses the same weights. The total loss is
    `sum_k w_k * p_k * L_k` with `p_k` the prior task weights; an evaluation uses the
    weights of the next training step.

    Args:
        task_weights: `{task_name: prior weight >= 0}` (the `TaskSpec` weights).
        seed: Integer seed of the weight sequence.

    Call arguments:
        task_losses: `{task_name: scalar loss}` with exactly the configured tasks.
        num_replicas: Unused; kept for a uniform interface.

    Returns:
        The scalar total loss.

    Example:
        ```python
        weighting = RandomLossWeighting({"a": 1.0, "b": 1.0}, seed=0)
        total = weighting({"a": l1, "b": l2})
        weighting.update_weights()  # after the step: draw the next weights
        ```
    """

    def __init__(self, task_weights: Mapping[str, float], seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.task_weights = check_task_weights(task_weights)
        self.seed = check_seed(seed)
        k = len(self.task_weights)
        first = ops.convert_to_numpy(random_loss_weights(k, (seed, 0)))
        self.loss_weights = self.add_weight(
            shape=(k,), initializer=keras.initializers.Constant(first), trainable=False,
            aggregation="only_first_replica", autocast=False, dtype="float32",
            name="loss_weights")
        self.step = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                    aggregation="only_first_replica", autocast=False,
                                    dtype="int64", name="step")
        self.built = True

    def call(self, task_losses, num_replicas: int = 1):
        check_task_names(task_losses, self.task_weights)
        weighted = [self.loss_weights[i] * p * ops.cast(task_losses[name], "float32")
                    for i, (name, p) in enumerate(self.task_weights.items())]
        return ops.sum(ops.stack(weighted))

    def update_weights(self, task_losses=None) -> None:
        """Draws the weights of the next step (the losses are not used)."""
        del task_losses
        step = self.step + 1
        self.loss_weights.assign(
            random_loss_weights(len(self.task_weights), tf.stack([tf.cast(self.seed, tf.int64),
                                                                   step])))
        self.step.assign(step)

    def effective_weights(self) -> dict[str, float]:
        """The weight currently multiplying each task's loss (random weight times prior)."""
        w = ops.convert_to_numpy(self.loss_weights)
        return {name: float(w[i] * p) for i, (name, p) in enumerate(self.task_weights.items())}

    def get_config(self):
        return {**super().get_config(), "task_weights": self.task_weights, "seed": self.seed}
