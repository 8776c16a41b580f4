"""Supervised contrastive loss (SupCon, `L^sup_out`) over multi-view embeddings."""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_mtml.losses.contrastive import (
    _check_labels,
    _check_metric,
    _check_min_examples,
    _check_temperature,
    _finite_embeddings,
    pairwise_distances,
)


def _as_views(embeddings) -> tf.Tensor:
    """`(batch, views, dim)` float32 from `(batch, dim)` or `(batch, views, dim)` embeddings."""
    rank = embeddings.shape.rank
    if rank not in (2, 3):
        raise ValueError(
            "Expected embeddings of shape `(batch, dim)` or `(batch, views, dim)`, e.g. "
            "`ops.stack([view1, view2], axis=1)`. "
            f"Received: embeddings.shape={tuple(embeddings.shape)}"
        )
    return embeddings[:, None, :] if rank == 2 else embeddings


def _supcon_losses(labels, embeddings, temperature: float, metric: str,
                   loss_name: str = "SupCon"):
    """Per-example SupCon losses `(batch,)` and whether each example has a positive `(batch,)`.

    `labels=None` makes every example its own class (its other views are its positives).
    """
    embeddings = _as_views(_finite_embeddings(embeddings))
    _check_min_examples(embeddings, 2, loss_name)
    batch, views = tf.shape(embeddings)[0], tf.shape(embeddings)[1]
    labels = tf.range(batch) if labels is None else _check_labels(labels, embeddings)
    labels = tf.tile(labels, [views])
    # View-major rows: row `v * batch + i` is view `v` of example `i`.
    flat = tf.reshape(tf.transpose(embeddings, (1, 0, 2)), (batch * views, -1))
    logits = -pairwise_distances(flat, metric) / temperature
    is_self = tf.eye(batch * views, dtype=tf.bool)
    log_normalizer = tf.reduce_logsumexp(tf.where(is_self, float("-inf"), logits), axis=1)
    log_probs = logits - log_normalizer[:, None]
    positive = tf.logical_and(tf.equal(labels[:, None], labels[None, :]), tf.logical_not(is_self))
    num_positives = tf.reduce_sum(tf.cast(positive, tf.float32), axis=1)
    anchor_losses = tf.reduce_sum(tf.where(positive, -log_probs, 0.0), axis=1)
    anchor_losses /= tf.maximum(num_positives, 1.0)
    # Every view of an example has positives, or none has (that needs one view and a class
    # of one example), so an example's validity is that of any of its views.
    losses = tf.reduce_mean(tf.reshape(anchor_losses, (views, batch)), axis=0)
    return losses, num_positives[:batch] > 0


def supervised_contrastive(labels, embeddings, temperature: float = 0.1,
                           metric: str = "cosine") -> tf.Tensor:
    """Supervised contrastive loss `L^sup_out` of Khosla et al. (2020), per example.

    https://arxiv.org/abs/2004.11362, eq. 2. All `batch * views` embeddings are anchors;
    the positives `P(i)` of anchor `i` are the other embeddings with its label (its other
    views and every view of same-class examples, so same-class examples are never treated as
    negatives), and `A(i)` is every embedding but `i`:
    `L_i = -1/|P(i)| * sum_{p in P(i)} log(exp(s_ip / t) / sum_{a in A(i)} exp(s_ia / t))`
    with `s = -distance` (`cos - 1` for `"cosine"`, equivalent to the cosine similarity).
    An example's loss is the mean over its views' anchors.

    Anchors without a positive (single view and no other example of the class) get 0 and
    `SupervisedContrastiveLoss` leaves them out of its mean; when no anchor has a positive
    the loss is 0. With two views and all labels distinct this is `nt_xent`.

    Args:
        labels: `(batch,)` integer class labels.
        embeddings: `(batch, views, dim)` (e.g. `ops.stack([view1, view2], axis=1)`) or
            `(batch, dim)` for one view; at least 2 examples, finite (NaN or Inf raises
            `InvalidArgumentError`). Not required to be normalized.
        temperature: Temperature `t > 0`.
        metric: `"cosine"` (the paper), `"euclidean"` or `"squared_euclidean"`.

    Returns:
        `(batch,)` float32 losses.

    Example:
        ```python
        z = ops.stack([encoder(view1), encoder(view2)], axis=1)  # (batch, 2, dim)
        loss = ops.mean(supervised_contrastive(labels, z, temperature=0.1))
        ```
    """
    losses, _ = _supcon_losses(
        labels, embeddings, _check_temperature(temperature), _check_metric(metric))
    return losses


@keras.saving.register_keras_serializable(package="tf_mtml")
class SupervisedContrastiveLoss(keras.losses.Loss):
    """`keras.losses.Loss` wrapper of `supervised_contrastive`.

    `y_true` holds `(batch,)` labels and `y_pred` `(batch, views, dim)` or `(batch, dim)`
    embeddings. Examples without a positive are masked out of the reduction, so the default
    `"sum_over_batch_size"` reduction is the mean over examples that have one (0 if none).

    Args:
        temperature: Temperature `t > 0`.
        metric: `"cosine"`, `"euclidean"` or `"squared_euclidean"`.
        name: Loss name.
        **kwargs: Base `keras.losses.Loss` arguments (`reduction`, `dtype`).

    Example:
        ```python
        model.compile(optimizer="adam", loss=SupervisedContrastiveLoss(temperature=0.1))
        model.fit(two_view_images, labels)  # the model outputs `(batch, 2, dim)`
        ```
    """

    def __init__(self, temperature: float = 0.1, metric: str = "cosine",
                 name: str = "supervised_contrastive", **kwargs):
        super().__init__(name=name, **kwargs)
        self.temperature = _check_temperature(temperature)
        self.metric = _check_metric(metric)

    def call(self, y_true, y_pred):
        losses, valid = _supcon_losses(y_true, y_pred, self.temperature, self.metric)
        # `keras.losses.Loss.__call__` reads this mask and reduces over the valid examples only.
        losses._keras_mask = valid
        return losses

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature, "metric": self.metric}
