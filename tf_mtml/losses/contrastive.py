"""Contrastive losses over embeddings: distances, input checks and the margin contrastive loss.

The triplet, NT-Xent and supervised contrastive losses (`triplet.py`, `nt_xent.py`,
`supcon.py`) build on the distances and checks defined here.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

METRICS = ("euclidean", "squared_euclidean", "cosine")


def _is_real(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _check_margin(margin: float) -> float:
    """Returns `margin` as a float; raises a `ValueError` unless it is a number `>= 0`."""
    if not (_is_real(margin) and 0 <= margin < float("inf")):
        raise ValueError(
            "Received an invalid value for `margin`, expected a finite float >= 0 (the distance "
            "beyond which dissimilar pairs stop contributing). "
            f"Received: margin={margin!r}"
        )
    return float(margin)


def _check_temperature(temperature: float) -> float:
    """Returns `temperature` as a float; raises a `ValueError` unless it is finite and `> 0`."""
    if not (_is_real(temperature) and 0 < temperature < float("inf")):
        raise ValueError(
            "Received an invalid value for `temperature`, expected a finite float > 0 (the "
            "similarities are divided by it; SimCLR and SupCon use 0.1). "
            f"Received: temperature={temperature!r}"
        )
    return float(temperature)


def _check_metric(metric: str) -> str:
    """Returns `metric`; raises a `ValueError` unless it is one of `METRICS`."""
    if metric not in METRICS:
        raise ValueError(
            f"Received an invalid value for `metric`, expected one of {METRICS}. "
            f"Received: metric={metric!r}"
        )
    return metric


def _finite_embeddings(embeddings, name: str = "embeddings") -> tf.Tensor:
    """`embeddings` as float32, with a check that raises `InvalidArgumentError` on NaN or Inf.

    The check runs eagerly or as a graph op (`tf.debugging.assert_all_finite`); XLA
    (`jit_compile=True`, TPUs) compiles it away.
    """
    return tf.debugging.assert_all_finite(
        tf.cast(embeddings, tf.float32),
        f"`{name}` contains NaN or Inf values, so the contrastive loss is undefined; check the "
        "model that produced them (a diverged step, a log or division of zero, fp16 overflow)",
    )


def _check_min_examples(embeddings, minimum: int, loss: str) -> None:
    """Raises unless `embeddings` has at least `minimum` rows (statically, else at run time)."""
    message = (
        f"{loss} needs a batch of at least {minimum} examples (each anchor needs negatives "
        "from other examples); increase the batch size."
    )
    size = embeddings.shape[0]
    if size is not None:
        if size < minimum:
            raise ValueError(f"{message} Received: batch_size={size}")
        return
    tf.debugging.assert_greater_equal(tf.shape(embeddings)[0], minimum, message=message)


def _check_labels(labels, embeddings) -> tf.Tensor:
    """`labels` flattened to `(batch,)`; raises if their count differs from the batch size."""
    labels = tf.reshape(labels, (-1,))
    size, batch = labels.shape[0], embeddings.shape[0]
    if size is not None and batch is not None and size != batch:
        raise ValueError(
            "Expected one label per example (the first dimension of `embeddings`). "
            f"Received: labels.shape={tuple(labels.shape)}, "
            f"embeddings.shape={tuple(embeddings.shape)}"
        )
    return labels


def _safe_sqrt(squared):
    """`sqrt(squared)` with a zero (not NaN) gradient where `squared == 0`."""
    zero = squared <= 0.0
    return tf.where(zero, 0.0, tf.sqrt(tf.where(zero, 1.0, squared)))


def pairwise_distances(embeddings, metric: str = "euclidean") -> tf.Tensor:
    """Distances between all rows of `embeddings`.

    `"euclidean"` is `||a - b||`, `"squared_euclidean"` is `||a - b||**2` and `"cosine"` is
    `1 - cos(a, b)` (in `[0, 2]`). Euclidean distances come from the Gram matrix, clipped at
    0, with an exact 0 on the diagonal and a zero gradient at zero distance.

    Args:
        embeddings: `(batch, dim)`.
        metric: One of `METRICS`.

    Returns:
        `(batch, batch)` float32 distances.
    """
    _check_metric(metric)
    x = tf.cast(embeddings, tf.float32)
    if metric == "cosine":
        x = tf.math.l2_normalize(x, axis=-1)
        return 1.0 - tf.matmul(x, x, transpose_b=True)
    norms = tf.reduce_sum(tf.square(x), axis=-1)
    squared = norms[:, None] + norms[None, :] - 2.0 * tf.matmul(x, x, transpose_b=True)
    off_diagonal = 1.0 - tf.eye(tf.shape(x)[0])
    squared = tf.maximum(squared, 0.0) * off_diagonal
    return squared if metric == "squared_euclidean" else _safe_sqrt(squared)


def pair_distances(a, b, metric: str = "euclidean") -> tf.Tensor:
    """Distance between `a[i]` and `b[i]` for each row `i` (see `pairwise_distances`).

    Args:
        a: `(batch, dim)`.
        b: `(batch, dim)`.
        metric: One of `METRICS`.

    Returns:
        `(batch,)` float32 distances, e.g. the `distance` of `margin_contrastive`.
    """
    _check_metric(metric)
    a, b = tf.cast(a, tf.float32), tf.cast(b, tf.float32)
    if metric == "cosine":
        cosine = tf.reduce_sum(tf.math.l2_normalize(a, -1) * tf.math.l2_normalize(b, -1), -1)
        return 1.0 - cosine
    squared = tf.reduce_sum(tf.square(a - b), axis=-1)
    return squared if metric == "squared_euclidean" else _safe_sqrt(squared)


def margin_contrastive(y_true, distance, margin: float = 1.0):
    """Margin contrastive loss of Hadsell, Chopra & LeCun (2006), per pair.

    `J = y * d**2 + (1 - y) * max(0, margin - d)**2`.

    Label convention: **`y = 1` marks a similar (positive) pair** and pulls it together;
    `y = 0` marks a dissimilar pair, pushed apart until `d >= margin`. (The paper writes the
    opposite convention, `Y = 0` for similar pairs; this function follows `y = 1` = same class,
    as pair labels are usually built with `labels_a == labels_b`.)

    Args:
        y_true: `(batch,)` pair labels in {0, 1} (bool or numeric).
        distance: `(batch,)` non-negative distances between the two embeddings of each pair,
            e.g. `pair_distances(a, b, metric)` (euclidean or cosine).
        margin: Margin `m >= 0`.

    Returns:
        `(batch,)` float32 losses.

    Example:
        ```python
        d = pair_distances(embed(x1), embed(x2), "euclidean")
        loss = ops.mean(margin_contrastive(ops.equal(y1, y2), d, margin=1.0))
        ```
    """
    margin = _check_margin(margin)
    y = ops.cast(y_true, "float32")
    d = ops.cast(distance, "float32")
    return y * ops.square(d) + (1.0 - y) * ops.square(ops.relu(margin - d))


@keras.saving.register_keras_serializable(package="tf_mtml")
class MarginContrastiveLoss(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `margin_contrastive`; `y_pred` is the pair distance."""

    def __init__(self, margin: float = 1.0, name: str = "margin_contrastive", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = _check_margin(margin)

    def call(self, y_true, y_pred):
        return margin_contrastive(ops.reshape(y_true, (-1,)), ops.reshape(y_pred, (-1,)),
                                  self.margin)

    def get_config(self) -> dict:
        return {**super().get_config(), "margin": self.margin}
