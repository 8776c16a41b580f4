"""Per-example task losses with missing labels, and their masked reduction.

Missing labels are marked in the label itself: NaN for float labels (binary, regression),
a negative value for integer labels (multiclass). A missing label contributes nothing: not to
the loss, not to its gradient, not to the count the loss is averaged over.
"""

from __future__ import annotations

import keras
from keras import ops

from tf_mtml.models.task_spec import TaskSpec


def label_mask(task: TaskSpec, y_true):
    """`(batch,)` float32 mask: 1 where task `task` has a label, 0 where it is missing."""
    if task.type == "multiclass":
        return ops.cast(ops.greater_equal(y_true, 0), "float32")
    return ops.cast(ops.logical_not(ops.isnan(y_true)), "float32")


def per_example_loss(task: TaskSpec, y_true, y_raw, label_mean=0.0, label_std=1.0):
    """Per-example loss of one task, with missing labels replaced by a harmless value.

    Args:
        task: The task's spec.
        y_true: Labels `(batch,)`: float for binary/regression, int for multiclass.
        y_raw: The model's raw output `(batch, units)`: logits, or the standardised value.
        label_mean, label_std: Regression label statistics; the loss is computed on
            `(y - label_mean) / label_std`.

    Returns:
        `(loss, mask)`, both `(batch,)` float32. `loss` is finite where `mask` is 0.
    """
    mask = label_mask(task, y_true)
    y_raw = ops.cast(y_raw, "float32")
    if task.type == "multiclass":
        labels = ops.where(mask > 0, y_true, ops.zeros_like(y_true))
        loss = ops.sparse_categorical_crossentropy(labels, y_raw, from_logits=True)
        return loss, mask
    labels = ops.where(mask > 0, ops.cast(y_true, "float32"), ops.zeros_like(y_true, "float32"))
    logits = ops.squeeze(y_raw, -1)
    if task.type == "binary":
        loss = ops.binary_crossentropy(labels, logits, from_logits=True)
        return loss, mask
    error = logits - (labels - label_mean) / label_std
    if task.loss_name == "mse":
        loss = ops.square(error)
    elif task.loss_name == "mae":
        loss = ops.abs(error)
    else:  # huber, delta 1 in standardised units
        abs_error = ops.abs(error)
        loss = ops.where(abs_error <= 1.0, 0.5 * ops.square(error), abs_error - 0.5)
    return loss, mask


def masked_sum_and_count(loss, mask, sample_weight=None):
    """Sum of `loss * mask * sample_weight` and the matching weight total (both scalars)."""
    weight = mask if sample_weight is None else mask * ops.cast(sample_weight, "float32")
    return ops.sum(ops.where(weight > 0, loss * weight, 0.0)), ops.sum(weight)


@keras.saving.register_keras_serializable(package="tf_mtml")
class MaskedTaskLoss(keras.losses.Loss):
    """Keras loss for one task with missing labels, for use in `model.compile(loss=...)`.

    Averages the per-example loss over the labelled examples only (a batch with no label
    for the task gives 0).

    Args:
        task_type: `"binary"`, `"multiclass"` or `"regression"`.
        loss: Per-example loss name; defaults as in `TaskSpec`.
        num_classes: For multiclass tasks.

    Example:
        ```python
        model.compile(optimizer="adam", loss={"click": MaskedTaskLoss("binary")})
        ```
    """

    def __init__(self, task_type: str, loss: str | None = None, num_classes: int | None = None,
                 name: str | None = None, **kwargs):
        kwargs["reduction"] = None
        super().__init__(name=name or f"masked_{task_type}", **kwargs)
        self.task = TaskSpec("task", task_type, num_classes=num_classes, loss=loss)

    def call(self, y_true, y_pred):
        y_true = ops.reshape(y_true, (-1,))
        loss, mask = per_example_loss(self.task, y_true, y_pred)
        total, count = masked_sum_and_count(loss, mask)
        return total / ops.maximum(count, 1.0)

    def get_config(self):
        config = super().get_config()
        config.pop("reduction", None)
        return {**config, "task_type": self.task.type, "loss": self.task.loss,
                "num_classes": self.task.num_classes}
