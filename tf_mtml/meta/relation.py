"""Relation Networks: a learned module scores each (class, query) pair of feature maps."""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_mtml.layers._validation import check_positive_int
from tf_mtml.meta.base import QUERY_Y
from tf_mtml.meta.prototypical import (
    MetricMetaLearner,
    encode_episode,
    shape_list,
    support_one_hot,
)

_RELATION_BLOCKS = 2


@keras.saving.register_keras_serializable(package="tf_mtml")
class RelationNetwork(MetricMetaLearner):
    """Relation Network: a learned relation module compares class and query feature maps.

    Sung et al., "Learning to Compare: Relation Network for Few-Shot Learning", CVPR 2018,
    https://arxiv.org/abs/1711.06025. The encoder maps an example to feature maps
    `(h, w, c)` (the paper's embedding module is `conv4(pool_blocks=2, flatten=False)`). A
    class's feature map is the **sum** of its `K` support feature maps; the relation module
    scores the channel-wise concatenation `[class, query]` with two blocks of
    `[3x3 conv, BatchNorm, ReLU, 2x2 max-pool]`, a ReLU dense layer and a sigmoid unit, so the
    score `r_{q,n}` lies in `[0, 1]` (two pools need `h, w >= 4`).

    `call` returns the scores `(B, N*Q, N)`: their argmax is the prediction, so the shared
    accuracy applies, but they are not logits. The training loss is the paper's: the squared
    error of the scores against the one-hot query labels (`episode_losses`, averaged over the
    `N` classes and the queries of each episode where the paper sums them; a constant scale).

    Args:
        encoder: Any Keras layer or model mapping one example to feature maps `(h, w, c)`.
        relation_filters: Filters of the relation module's convolutions.
        relation_units: Width of the relation module's hidden dense layer.
        synchronized: Whether the relation module's BatchNorm synchronizes across replicas.
        num_ways: Static `N` of the training episodes (TPU), or None to infer it.
        **kwargs: `keras.Model` keyword arguments.

    Call arguments:
        episode: Dict with `support_x` `(B, N*K, *feature_shape)`, `support_y` `(B, N*K)`
            int labels in `0..N-1`, `query_x` `(B, N*Q, *feature_shape)`.
        training: Passed to the encoder and the relation module (BatchNorm).

    Returns:
        Relation scores `(B, N*Q, N)` float32 in `[0, 1]`.

    Example:
        ```python
        learner = RelationNetwork(conv4(pool_blocks=2, flatten=False), num_ways=5)
        scores = learner(episode)  # (B, 5 * Q, 5)
        ```
    """

    def __init__(self, encoder: keras.layers.Layer, relation_filters: int = 64,
                 relation_units: int = 8, synchronized: bool = False,
                 num_ways: int | None = None, **kwargs):
        super().__init__(encoder, num_ways=num_ways, **kwargs)
        self.relation_filters = check_positive_int("relation_filters", relation_filters)
        self.relation_units = check_positive_int("relation_units", relation_units)
        self.synchronized = bool(synchronized)
        layers = []
        for i in range(_RELATION_BLOCKS):
            layers += [
                keras.layers.Conv2D(relation_filters, 3, padding="same", name=f"conv{i}",
                                    dtype=self.dtype_policy),
                keras.layers.BatchNormalization(synchronized=self.synchronized, name=f"bn{i}",
                                                dtype=self.dtype_policy),
                keras.layers.ReLU(name=f"relu{i}", dtype=self.dtype_policy),
                keras.layers.MaxPooling2D(2, name=f"pool{i}", dtype=self.dtype_policy),
            ]
        layers += [
            keras.layers.Flatten(dtype=self.dtype_policy),
            keras.layers.Dense(relation_units, activation="relu", name="hidden",
                               dtype=self.dtype_policy),
            keras.layers.Dense(1, activation="sigmoid", name="score", dtype=self.dtype_policy),
        ]
        self.relation_module = keras.Sequential(layers, name="relation_module")

    def build_head(self, embedding_shape: tuple) -> None:
        if len(embedding_shape) != 4 or any(d is None for d in embedding_shape[1:]):
            raise ValueError(
                "RelationNetwork expects an encoder that outputs feature maps "
                "`(batch, h, w, c)` of static size, e.g. conv4(pool_blocks=2, flatten=False). "
                f"Received: encoder output shape {embedding_shape}"
            )
        _, height, width, channels = embedding_shape
        if min(height, width) < 2**_RELATION_BLOCKS:
            raise ValueError(
                f"The relation module max-pools twice, so it needs feature maps of at least "
                f"{2**_RELATION_BLOCKS}x{2**_RELATION_BLOCKS}. Received: encoder output shape "
                f"{embedding_shape}. Pool less in the encoder (e.g. conv4(pool_blocks=2)) or "
                "use larger inputs."
            )
        self.relation_module.build((None, height, width, 2 * channels))

    def class_features(self, support_features, support_y, num_ways=None) -> tf.Tensor:
        """Per-class sums `(B, N, h, w, c)` of support feature maps `(B, S, h, w, c)`."""
        one_hot = support_one_hot(support_y, num_ways)
        return tf.einsum("bsn,bshwc->bnhwc", one_hot, tf.cast(support_features, tf.float32))

    def relation_scores(self, class_features, query_features, training=None) -> tf.Tensor:
        """Scores `(B, Q, N)` float32 of every (query, class) pair of feature maps."""
        classes = tf.cast(class_features, tf.float32)[:, None]
        queries = tf.cast(query_features, tf.float32)[:, :, None]
        pair_shape = tf.broadcast_dynamic_shape(tf.shape(classes), tf.shape(queries))
        pairs = tf.concat([tf.broadcast_to(classes, pair_shape),
                           tf.broadcast_to(queries, pair_shape)], axis=-1)
        _, num_ways, height, width, channels = shape_list(class_features)
        scores = self.relation_module(tf.reshape(pairs, [-1, height, width, 2 * channels]),
                                      training=training)
        return tf.reshape(tf.cast(scores, tf.float32), [*shape_list(query_features)[:2], num_ways])

    def episode_logits(self, support_x, support_y, query_x, num_ways, training=None):
        support, query = encode_episode(self.encoder, support_x, query_x, training)
        return self.relation_scores(self.class_features(support, support_y, num_ways), query,
                                    training)

    def episode_losses(self, episode: dict, predictions) -> tf.Tensor:
        """Squared error of the scores against one-hot query labels, `(B,)` float32."""
        scores = tf.cast(predictions, tf.float32)
        labels = tf.cast(episode[QUERY_Y], tf.int32)
        num_ways = tf.shape(scores)[-1]
        checks = [
            tf.debugging.assert_non_negative(labels, message="`query_y` must be in 0..N-1"),
            tf.debugging.assert_less(labels, num_ways, message="`query_y` must be in 0..N-1"),
        ]
        with tf.control_dependencies(checks):
            targets = tf.one_hot(labels, num_ways)
        return tf.reduce_mean(tf.square(scores - targets), axis=[1, 2])

    def get_config(self) -> dict:
        return {**super().get_config(), "relation_filters": self.relation_filters,
                "relation_units": self.relation_units, "synchronized": self.synchronized}
