"""Meta-SGD: MAML with a learned learning rate for every parameter entry."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tf_mtml.meta.maml import MAML


@keras.saving.register_keras_serializable(package="tf_mtml")
class MetaSGD(MAML):
    """Meta-SGD: the inner step `theta' = theta - alpha * grad` with a learned `alpha`.

    Li et al., "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning", 2017,
    https://arxiv.org/abs/1707.09835. `alpha` holds one rate per parameter entry (variables
    shaped like the learner's trainable variables, initialised to `inner_lr`); the outer loop
    trains it with the learner's weights, so `alpha` learns both the step size and the
    direction of each entry and may take any sign. With `alpha == inner_lr` everywhere,
    Meta-SGD computes exactly MAML's adaptation.

    Args:
        learner: A built Keras model (see `MAML`).
        inner_lr: Initial value of every learned rate, a finite number.
        inner_steps: Inner steps per episode in training (Li et al. use 1).
        **kwargs: The other arguments of `MAML` (`eval_inner_steps`, `first_order`,
            `recompute`, `transductive`, `meta_batch_mode`, `problem`, `name`, `dtype`).

    Call arguments, returns: as `MAML`.

    Example:

    >>> learner = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> meta_sgd = MetaSGD(learner, inner_lr=0.1, problem="regression")
    >>> [tuple(rate.shape) for rate in meta_sgd.inner_lrs]
    [(2, 1), (1,)]
    """

    def __init__(self, learner: keras.Model, inner_lr: float = 0.01, inner_steps: int = 1,
                 **kwargs):
        super().__init__(learner, inner_lr=inner_lr, inner_steps=inner_steps, **kwargs)
        self.inner_lrs = [
            self.add_weight(shape=variable.shape,
                            initializer=keras.initializers.Constant(self.inner_lr),
                            dtype=variable.dtype,
                            name=variable.path.replace("/", "_") + "_inner_lr")
            for variable in learner.trainable_variables
        ]

    def _check_inner_lr(self, inner_lr) -> float:
        if isinstance(inner_lr, bool) or not isinstance(inner_lr, (int, float)) or not (
                math.isfinite(inner_lr)):
            raise ValueError(
                "Received an invalid value for `inner_lr`, expected a finite number (the "
                f"initial learned rate). Received: inner_lr={inner_lr!r}"
            )
        return float(inner_lr)

    def inner_learning_rates(self) -> list[tf.Tensor]:
        return [tf.convert_to_tensor(rate) for rate in self.inner_lrs]
