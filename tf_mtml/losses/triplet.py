"""Triplet margin loss with batch-all, batch-hard and semi-hard online mining."""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_mtml.losses.contrastive import (
    _check_labels,
    _check_margin,
    _check_metric,
    _finite_embeddings,
    pairwise_distances,
)

MINING = ("batch_all", "batch_hard", "semi_hard")


def _check_mining(mining: str) -> str:
    if mining not in MINING:
        raise ValueError(
            f"Received an invalid value for `mining`, expected one of {MINING}. "
            f"Received: mining={mining!r}"
        )
    return mining


def _semi_hard_negatives(distances, positive_distances, negative):
    """Per (anchor, positive): the closest negative farther than the positive, else the farthest.

    Sorting each anchor's negative distances and binary-searching the positive distance costs
    `O(batch**2 log batch)` time and `O(batch**2)` memory (no `(batch, batch, batch)` tensor).
    """
    sorted_negatives = tf.sort(tf.where(negative, distances, float("inf")), axis=1)
    farther = tf.searchsorted(sorted_negatives, positive_distances, side="right")
    last = tf.reduce_sum(tf.cast(negative, tf.int32), axis=1, keepdims=True) - 1
    index = tf.maximum(tf.minimum(farther, last), 0)
    return tf.gather(sorted_negatives, index, batch_dims=1)


def _triplet_losses(labels, embeddings, margin: float, mining: str, metric: str):
    """Per-anchor losses `(batch,)` and whether each anchor has a valid triplet `(batch,)`."""
    embeddings = _finite_embeddings(embeddings)
    labels = _check_labels(labels, embeddings)
    same = tf.equal(labels[:, None], labels[None, :])
    positive = tf.logical_and(same, tf.logical_not(tf.eye(tf.shape(labels)[0], dtype=tf.bool)))
    negative = tf.logical_not(same)
    distances = pairwise_distances(embeddings, metric)
    num_positives = tf.reduce_sum(tf.cast(positive, tf.float32), axis=1)
    valid = tf.logical_and(tf.reduce_any(positive, axis=1), tf.reduce_any(negative, axis=1))
    if mining == "batch_hard":
        hardest_positive = tf.reduce_max(tf.where(positive, distances, 0.0), axis=1)
        hardest_negative = tf.reduce_min(
            tf.where(negative, distances, tf.reduce_max(distances)), axis=1)
        losses = tf.nn.relu(hardest_positive - hardest_negative + margin)
    elif mining == "semi_hard":
        negatives = _semi_hard_negatives(distances, distances, negative)
        pair_losses = tf.where(positive, tf.nn.relu(distances - negatives + margin), 0.0)
        losses = tf.reduce_sum(pair_losses, axis=1) / tf.maximum(num_positives, 1.0)
    else:
        triplet_mask = tf.logical_and(positive[:, :, None], negative[:, None, :])
        margins = distances[:, :, None] - distances[:, None, :] + margin
        sums = tf.reduce_sum(tf.where(triplet_mask, tf.nn.relu(margins), 0.0), axis=(1, 2))
        counts = tf.reduce_sum(tf.cast(triplet_mask, tf.float32), axis=(1, 2))
        losses = sums / tf.maximum(counts, 1.0)
    return tf.where(valid, losses, 0.0), valid


def triplet_margin(labels, embeddings, margin: float = 1.0, mining: str = "semi_hard",
                   metric: str = "euclidean") -> tf.Tensor:
    """Triplet margin loss with online mining inside the batch, per anchor.

    A triplet `(a, p, n)` has `labels[p] == labels[a]`, `p != a` and `labels[n] != labels[a]`;
    its loss is `max(0, d(a, p) - d(a, n) + margin)` (Schroff et al., "FaceNet", 2015,
    https://arxiv.org/abs/1503.03832). Mining picks the triplets of each anchor `a`:

    - `"batch_all"`: the mean over all its valid `(p, n)` (Hermans et al. 2017,
      https://arxiv.org/abs/1703.07737);
    - `"batch_hard"`: its farthest positive and closest negative (Hermans et al. 2017);
    - `"semi_hard"`: for every positive `p`, the FaceNet semi-hard negative, farther than the
      positive but within the margin, `d(a, p) < d(a, n) < d(a, p) + margin`, taking the
      closest such negative; then the mean over `p`. As in TensorFlow Addons'
      `TripletSemiHardLoss`, the closest negative farther than `p` is taken even when it is
      beyond the margin (its loss is 0, as for every farther negative), and when no negative
      is farther than `p` the fallback is the farthest negative of `a`.

    Anchors without a valid triplet (no other example of their class, or no example of
    another class) get 0; `TripletMarginLoss` leaves them out of its mean, and a batch with
    no valid triplet at all gives 0. On class-balanced batches (`P` classes x `K` examples)
    the mean over anchors equals the mean over all mined triplets (pairs for semi-hard).
    `"batch_all"` builds a `(batch, batch, batch)` tensor; the others are `O(batch**2)`.

    Args:
        labels: `(batch,)` integer class labels.
        embeddings: `(batch, dim)` float embeddings, finite (NaN or Inf raises
            `InvalidArgumentError`).
        margin: Margin `>= 0`.
        mining: One of `"batch_all"`, `"batch_hard"`, `"semi_hard"`.
        metric: `"euclidean"`, `"squared_euclidean"` or `"cosine"` (`1 - cos`), see
            `pairwise_distances`.

    Returns:
        `(batch,)` float32 per-anchor losses.

    Example:
        ```python
        loss = ops.mean(triplet_margin(labels, model(images), margin=0.2, mining="batch_hard"))
        ```
    """
    losses, _ = _triplet_losses(labels, embeddings, _check_margin(margin), _check_mining(mining),
                                _check_metric(metric))
    return losses


@keras.saving.register_keras_serializable(package="tf_mtml")
class TripletMarginLoss(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `triplet_margin`: `y_true` labels, `y_pred` embeddings.

    Anchors without a valid triplet are masked out of the reduction, so the default
    `"sum_over_batch_size"` reduction is the mean over anchors that have one (0 if none).

    Args:
        margin: Margin `>= 0`.
        mining: One of `"batch_all"`, `"batch_hard"`, `"semi_hard"`.
        metric: `"euclidean"`, `"squared_euclidean"` or `"cosine"`.
        name: Loss name.
        **kwargs: Base `keras.losses.Loss` arguments (`reduction`, `dtype`).

    Example:
        ```python
        model.compile(optimizer="adam", loss=TripletMarginLoss(margin=0.5, mining="batch_hard"))
        model.fit(images, labels)  # the model outputs `(batch, dim)` embeddings
        ```
    """

    def __init__(self, margin: float = 1.0, mining: str = "semi_hard", metric: str = "euclidean",
                 name: str = "triplet_margin", **kwargs):
        super().__init__(name=name, **kwargs)
        self.margin = _check_margin(margin)
        self.mining = _check_mining(mining)
        self.metric = _check_metric(metric)

    def call(self, y_true, y_pred):
        losses, valid = _triplet_losses(y_true, y_pred, self.margin, self.mining, self.metric)
        # `keras.losses.Loss.__call__` reads this mask and reduces over the valid anchors only.
        losses._keras_mask = valid
        return losses

    def get_config(self) -> dict:
        return {**super().get_config(), "margin": self.margin, "mining": self.mining,
                "metric": self.metric}
