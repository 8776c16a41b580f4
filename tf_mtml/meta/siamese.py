"""Siamese networks: a shared encoder trained on same/different pairs, nearest neighbour at test."""

from __future__ import annotations

import numbers
from collections.abc import Callable

import keras
import tensorflow as tf
from keras import ops

from tf_mtml.losses.contrastive import margin_contrastive
from tf_mtml.meta.base import QUERY_X, QUERY_Y, SUPPORT_X, SUPPORT_Y
from tf_mtml.meta.prototypical import (
    MetricMetaLearner,
    check_episode_tensors,
    encode_episode,
    flatten_embeddings,
    support_one_hot,
)


def _check_margin(margin) -> float:
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not margin >= 0:
        raise ValueError(
            "Received an invalid value for `margin`, expected a float >= 0 (the distance beyond "
            f"which different-class pairs stop contributing). Received: margin={margin!r}"
        )
    return float(margin)


def euclidean_distances(a, b):
    """`(B, P, D)`, `(B, R, D)` -> `(B, P, R)` float32 euclidean distances.

    Expands `|a - b|^2 = |a|^2 + |b|^2 - 2 a.b` (one matmul, no `(B, P, R, D)` tensor). The
    square root is taken of `max(d^2, 1e-12)`, whose gradient is finite at `a == b`.
    """
    a, b = ops.cast(a, "float32"), ops.cast(b, "float32")
    squares = (ops.sum(ops.square(a), axis=-1)[:, :, None]
               + ops.sum(ops.square(b), axis=-1)[:, None, :]
               - 2.0 * ops.matmul(a, ops.transpose(b, (0, 2, 1))))
    return ops.sqrt(ops.maximum(squares, 1e-12))


@keras.saving.register_keras_serializable(package="tf_mtml")
class SiameseNetwork(MetricMetaLearner):
    """Siamese network: pair-trained shared encoder, nearest-support-example classification.

    Koch, Zemel & Salakhutdinov, "Siamese Neural Networks for One-shot Image Recognition",
    ICML 2015 Deep Learning Workshop; loss of Hadsell, Chopra & LeCun, "Dimensionality
    Reduction by Learning an Invariant Mapping", CVPR 2006. Koch et al. score a pair with a
    learned weighted L1 distance and a sigmoid; this is the metric-learning form: euclidean
    distance `d` between the encoder's embeddings, trained with the margin contrastive loss
    `J = y * d**2 + (1 - y) * max(0, margin - d)**2` (`tf_mtml.losses.margin_contrastive`).

    **Label convention: `y = 1` marks a same-class pair** (pulled together), `y = 0` a
    different-class pair (pushed beyond `margin`).

    Pairs: every (query, support) pair of each episode, `y = [query class == support class]`.
    In an N-way episode only `1/N` of them are positive; with `balanced=True` the positive
    and the negative pairs each carry half of the episode loss (means over each group),
    otherwise the episode loss is the mean over all pairs.

    `call` classifies each query by its nearest support example: the logit of class `c` is
    minus the distance to the nearest support example of class `c`. The training loss
    (`train_gradients`, `episode_losses`) is the pair loss, not the cross-entropy of these
    logits.

    Args:
        encoder: Any Keras layer or model embedding one example (outputs are flattened).
        margin: Margin `m >= 0` of the contrastive loss.
        balanced: Whether positive and negative pairs weigh equally in the loss.
        num_ways: Static `N` of the training episodes (TPU), or None to infer it.
        **kwargs: `keras.Model` keyword arguments.

    Call arguments:
        episode: Dict with `support_x` `(B, N*K, *feature_shape)`, `support_y` `(B, N*K)`
            int labels in `0..N-1` and `query_x` `(B, N*Q, *feature_shape)`.
        training: Passed to the encoder.

    Returns:
        Logits `(B, N*Q, N)` float32.

    Example:
        ```python
        encoder = keras.Sequential([keras.layers.Dense(64, "relu"), keras.layers.Dense(32)])
        learner = SiameseNetwork(encoder, margin=1.0, num_ways=5)
        logits = learner(episode)  # (B, 5 * Q, 5)
        loss, grads, logits = learner.train_gradients(episode, global_batch_size=B)
        ```
    """

    def __init__(self, encoder: keras.layers.Layer, margin: float = 1.0, balanced: bool = True,
                 num_ways: int | None = None, **kwargs):
        super().__init__(encoder, num_ways=num_ways, **kwargs)
        self.margin = _check_margin(margin)
        self.balanced = bool(balanced)

    def pair_distances(self, support_x, query_x, training=None):
        """Euclidean distances `(B, Q, S)` between query and support embeddings."""
        support, query = encode_episode(self.encoder, support_x, query_x, training)
        return euclidean_distances(flatten_embeddings(query, 2), flatten_embeddings(support, 2))

    def nearest_support_logits(self, distances, support_y, num_ways=None):
        """`(B, Q, N)`: minus the distance to the nearest support example of each class."""
        in_class = support_one_hot(support_y, num_ways) > 0.5
        masked = ops.where(in_class[:, None, :, :], distances[:, :, :, None], float("inf"))
        return -ops.min(masked, axis=2)

    def episode_logits(self, support_x, support_y, query_x, num_ways, training=None):
        distances = self.pair_distances(support_x, query_x, training)
        return self.nearest_support_logits(distances, support_y, num_ways)

    @staticmethod
    def pair_labels(query_y, support_y):
        """`(B, Q, S)` float32: 1 where query and support example share a class, else 0."""
        same = ops.equal(ops.cast(query_y, "int32")[:, :, None],
                         ops.cast(support_y, "int32")[:, None, :])
        return ops.cast(same, "float32")

    def pair_losses(self, labels, distances):
        """Pair loss of each episode `(B,)` from pair labels and distances `(B, Q, S)`."""
        batch = ops.shape(distances)[0]
        labels = ops.reshape(labels, (batch, -1))
        losses = ops.reshape(
            margin_contrastive(ops.reshape(labels, (-1,)), ops.reshape(distances, (-1,)),
                               self.margin), (batch, -1))
        if not self.balanced:
            return ops.mean(losses, axis=-1)
        positive = ops.sum(labels * losses, axis=-1)
        negative = ops.sum((1.0 - labels) * losses, axis=-1)
        num_positive = ops.sum(labels, axis=-1)
        num_negative = ops.sum(1.0 - labels, axis=-1)
        return 0.5 * (ops.divide_no_nan(positive, num_positive)
                      + ops.divide_no_nan(negative, num_negative))

    def _pair_forward(self, episode: dict, training):
        """`(pair losses (B,), logits)` of a meta-batch from one encoder pass."""
        support_x, support_y, query_x = (
            tf.convert_to_tensor(episode[key]) for key in (SUPPORT_X, SUPPORT_Y, QUERY_X))
        check_episode_tensors(support_x, support_y, query_x, batched=True)
        distances = self.pair_distances(support_x, query_x, training)
        logits = self.nearest_support_logits(distances, support_y, self.num_ways)
        return self.pair_losses(self.pair_labels(episode[QUERY_Y], support_y), distances), logits

    def episode_losses(self, episode: dict, predictions) -> tf.Tensor:
        """Pair loss of each episode `(B,)`, recomputed from the episode in inference mode.

        The logits do not determine the pair loss, so the embeddings are computed again;
        `train_gradients` gets the loss and the logits from one training-mode pass.
        """
        return self._pair_forward(episode, training=False)[0]

    def train_gradients(self, episode: dict, global_batch_size: int,
                        scale_loss: Callable | None = None):
        """Loss and gradients of the pair loss; see `MetaLearner.train_gradients`."""
        with tf.GradientTape() as tape:
            losses, predictions = self._pair_forward(episode, training=True)
            loss = tf.nn.compute_average_loss(losses, global_batch_size=global_batch_size)
            scaled = scale_loss(loss) if scale_loss is not None else loss
        return loss, tape.gradient(scaled, self.trainable_variables), predictions

    def get_config(self) -> dict:
        return {**super().get_config(), "margin": self.margin, "balanced": self.balanced}
