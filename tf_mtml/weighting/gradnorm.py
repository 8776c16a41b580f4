"""GradNorm: learned loss weights that balance gradient norms (Chen et al., ICML 2018)."""

from __future__ import annotations

from collections.abc import Mapping

import keras
from keras import ops

from tf_mtml.weighting._validation import check_losses_vector, check_task_weights
from tf_mtml.weighting.static import check_task_names


def gradnorm_weight_gradient(weights, gradient_norms, task_losses, initial_losses,
                             alpha: float):
    """The gradient of GradNorm's loss `L_grad` with respect to the task weights.

    With `n_i = |grad_W L_i|` the gradient norm of task `i`'s loss on the shared weights
    `W`, `G_i = w_i n_i` (the norm of the weighted loss's gradient), `G_avg = mean_i G_i`,
    the inverse training rates `r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0))` and the
    target `G_avg r_i^alpha` held constant (eq. 2 of the paper),
    `L_grad = sum_i |G_i - G_avg r_i^alpha|` has
    `dL_grad / dw_i = sign(G_i - G_avg r_i^alpha) * n_i`.

    Args:
        weights: `(K,)` current task weights `w`.
        gradient_norms: `(K,)` norms `n_i` of the unweighted task-loss gradients on `W`.
        task_losses: `(K,)` current task losses `L_i(t)`.
        initial_losses: `(K,)` task losses at the first step `L_i(0)`.
        alpha: The asymmetry `alpha >= 0`; 0 pulls every `G_i` to `G_avg`.

    Returns:
        `(K,)` float32 gradient of `L_grad` with respect to `w`.
    """
    weights, norms, losses, initial = (ops.cast(v, "float32") for v in
                                       (weights, gradient_norms, task_losses, initial_losses))
    scaled = weights * norms
    relative = losses / ops.where(initial > 0, initial, 1.0)
    mean_relative = ops.mean(relative)
    inverse_rate = relative / ops.where(mean_relative > 0, mean_relative, 1.0)
    target = ops.mean(scaled) * ops.power(inverse_rate, alpha)
    return ops.sign(scaled - target) * norms


@keras.saving.register_keras_serializable(package="tf_mtml")
class GradNorm(keras.layers.Layer):
    """Learns task weights that equalise the task gradient norms on the last shared layer.

    Chen et al., "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep
    Multitask Networks", ICML 2018, https://arxiv.org/abs/1711.02257, Algorithm 1. The
    total loss is `sum_i w_i p_i L_i` (`p_i` the prior task weights). The network is
    trained on it; the weights `w` are trained only on `L_grad` (see
    `gradnorm_weight_gradient`, which the training step feeds with the norms of the task
    gradients on the last shared layer's kernel), by the same optimizer; after every step
    `update_weights` clips them at 0 and renormalises them to sum to `K`. The first
    training step records `L_i(0)`.

    Args:
        task_weights: `{task_name: prior weight >= 0}` (the `TaskSpec` weights).
        alpha: The asymmetry hyper-parameter `alpha >= 0` (the paper uses 0.12-3; 1.5 is
            its common default).

    Call arguments:
        task_losses: `{task_name: scalar loss}` with exactly the configured tasks.
        num_replicas: Unused; kept for a uniform interface.

    Returns:
        The scalar total loss.

    Example:
        ```python
        weighting = GradNorm({"a": 1.0, "b": 1.0}, alpha=1.5)
        total = weighting({"a": l1, "b": l2})
        grad_w = weighting.weight_gradient(norms, global_losses)  # replaces d total / d w
        weighting.update_weights(global_losses)  # after the optimizer step
        ```
    """

    def __init__(self, task_weights: Mapping[str, float], alpha: float = 1.5, **kwargs):
        super().__init__(**kwargs)
        self.task_weights = check_task_weights(task_weights)
        if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha >= 0:
            raise ValueError(
                "Received an invalid value for `alpha`, expected a number >= 0. "
                f"Received: alpha={alpha!r}")
        self.alpha = float(alpha)
        k = len(self.task_weights)
        self.loss_weights = self.add_weight(shape=(k,), initializer="ones", dtype="float32",
                                            aggregation="only_first_replica", autocast=False,
                                            name="loss_weights")
        state = {"trainable": False, "aggregation": "only_first_replica", "autocast": False,
                 "dtype": "float32"}
        self.initial_losses = self.add_weight(shape=(k,), initializer="zeros",
                                              name="initial_losses", **state)
        self.initialized = self.add_weight(shape=(), initializer="zeros", name="initialized",
                                           **state)
        self.built = True

    def call(self, task_losses, num_replicas: int = 1):
        check_task_names(task_losses, self.task_weights)
        weighted = [self.loss_weights[i] * p * ops.cast(task_losses[name], "float32")
                    for i, (name, p) in enumerate(self.task_weights.items())]
        return ops.sum(ops.stack(weighted))

    def _initial_losses(self, task_losses):
        return ops.where(self.initialized > 0, self.initial_losses,
                         ops.cast(task_losses, "float32"))

    def weight_gradient(self, gradient_norms, task_losses):
        """`dL_grad/dw` from the norms `(K,)` of the prior-weighted task gradients on the last
        shared kernel and the global prior-weighted task losses `(K,)` of this step."""
        check_losses_vector(task_losses, len(self.task_weights))
        check_losses_vector(gradient_norms, len(self.task_weights))
        return gradnorm_weight_gradient(self.loss_weights, gradient_norms, task_losses,
                                        self._initial_losses(task_losses), self.alpha)

    def update_weights(self, task_losses) -> None:
        """Records `L(0)` on the first call; renormalises the weights to sum to `K`."""
        check_losses_vector(task_losses, len(self.task_weights))
        self.initial_losses.assign(self._initial_losses(task_losses))
        self.initialized.assign(ops.ones_like(self.initialized))
        weights = ops.maximum(self.loss_weights, 0.0)
        total = ops.sum(weights)
        k = float(len(self.task_weights))
        self.loss_weights.assign(ops.where(total > 0, k * weights / ops.where(total > 0, total,
                                                                              1.0), 1.0))

    def effective_weights(self) -> dict[str, float]:
        """The weight currently multiplying each task's loss (learned weight times prior)."""
        w = ops.convert_to_numpy(self.loss_weights)
        return {name: float(w[i] * p) for i, (name, p) in enumerate(self.task_weights.items())}

    def get_config(self):
        return {**super().get_config(), "task_weights": self.task_weights, "alpha": self.alpha}
