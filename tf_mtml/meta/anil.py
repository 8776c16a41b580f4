"""ANIL: MAML that adapts only the head of the learner in the inner loop."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tf_mtml.meta.maml import MAML


@keras.saving.register_keras_serializable(package="tf_mtml")
class ANIL(MAML):
    """Almost No Inner Loop: adapt the head only; the body is meta-learned but frozen per task.

    Raghu et al., "Rapid Learning or Feature Reuse? Towards Understanding the Effectiveness of
    MAML", ICLR 2020, https://arxiv.org/abs/1909.09157. The inner steps update only the head
    variables; the body's fast weights stay equal to its weights, and the outer loop trains
    body and head (the body's meta-gradient flows through the head's inner updates).

    The head is either the last `num_head_layers` layers of `learner.layers` that own
    trainable variables (default: the last one, e.g. the classifier `Dense`), or the
    variables listed in `head_variables`.

    Args:
        learner: A built Keras model (see `MAML`).
        inner_lr: Learning rate of the inner SGD steps, positive.
        inner_steps: Inner steps per episode in training.
        num_head_layers: Number of trailing weighted layers forming the head; 1 if neither
            this nor `head_variables` is given.
        head_variables: The head's variables: variables of `learner.trainable_variables`, or
            their indices in that list (the form kept in the config, since variable paths
            change when a model is rebuilt). Exclusive with `num_head_layers`.
        **kwargs: The other arguments of `MAML`.

    Call arguments, returns: as `MAML`.

    Example:

    >>> learner = keras.Sequential([keras.Input((2,)), keras.layers.Dense(4),
    ...                             keras.layers.Dense(1)])
    >>> anil = ANIL(learner, inner_lr=0.1, problem="regression")
    >>> anil.adapted_indices
    (2, 3)
    """

    def __init__(self, learner: keras.Model, inner_lr: float = 0.01, inner_steps: int = 1,
                 num_head_layers: int | None = None,
                 head_variables: Sequence[keras.Variable | int] | None = None, **kwargs):
        super().__init__(learner, inner_lr=inner_lr, inner_steps=inner_steps, **kwargs)
        variables = learner.trainable_variables
        if head_variables is not None:
            if num_head_layers is not None:
                raise ValueError(
                    "Received both `num_head_layers` and `head_variables`; pass one of them. "
                    f"Received: num_head_layers={num_head_layers!r}, "
                    f"head_variables={head_variables!r}"
                )
            indices = [self._variable_index(v) for v in head_variables]
            if not indices or None in indices:
                raise ValueError(
                    "Received an invalid value for `head_variables`, expected a non-empty list "
                    "of variables of `learner.trainable_variables` or their indices (0 to "
                    f"{len(variables) - 1}). Received: head_variables={head_variables!r}"
                )
        else:
            num_head_layers = 1 if num_head_layers is None else num_head_layers
            weighted = [layer for layer in learner.layers if layer.trainable_variables]
            if (isinstance(num_head_layers, bool) or not isinstance(num_head_layers, int)
                    or not 1 <= num_head_layers <= len(weighted)):
                raise ValueError(
                    "Received an invalid value for `num_head_layers`, expected an integer from "
                    f"1 to {len(weighted)} (the learner's layers with trainable variables: "
                    f"{[layer.name for layer in weighted]}). "
                    f"Received: num_head_layers={num_head_layers!r}"
                )
            indices = [self._variable_index(v) for layer in weighted[-num_head_layers:]
                       for v in layer.trainable_variables]
        self.num_head_layers = num_head_layers
        self.adapted_indices = tuple(sorted(set(indices)))
        self.head_variables = None if head_variables is None else self.adapted_indices

    def _variable_index(self, variable) -> int | None:
        """Position of `variable` (a variable or an index) in `learner.trainable_variables`."""
        variables = self.learner.trainable_variables
        if isinstance(variable, int) and not isinstance(variable, bool):
            return variable if 0 <= variable < len(variables) else None
        return next((i for i, v in enumerate(variables) if v is variable), None)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_head_layers": self.num_head_layers,
                "head_variables": None if self.head_variables is None
                else list(self.head_variables)}
