"""Prototypical Networks, and the episode plumbing of the metric-based meta-learners.

Metric learners (Prototypical, Matching, Relation networks) classify each query of an episode by
comparing its embedding with the embeddings of the support set; nothing is adapted per episode.
`MetricMetaLearner` holds what they share: label checks, one encoder call for the support and
query sets of the whole meta-batch, and `few_shot_logits` for one episode of any size (the
served few-shot signature).
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import tensorflow as tf
from keras import ops

from tf_mtml.layers._validation import check_choice, check_positive_int
from tf_mtml.meta.base import QUERY_X, SUPPORT_X, SUPPORT_Y, MetaLearner

DISTANCES = ("squared_euclidean", "cosine")


def shape_list(x: tf.Tensor) -> list:
    """The dimensions of `x`: Python ints where static, scalar tensors where not.

    Reshapes built from it keep the static sizes that layers after the encoder need.
    """
    dynamic = tf.shape(x)
    return [d if d is not None else dynamic[i] for i, d in enumerate(x.shape)]


def check_episode_tensors(support_x, support_y, query_x, batched: bool) -> None:
    """Raises a `ValueError` unless the episode tensors have consistent ranks and shapes.

    Args:
        support_x: `(B, S, *feature_shape)` (batched) or `(S, *feature_shape)`.
        support_y: `(B, S)` (batched) or `(S,)` labels.
        query_x: `(B, Q, *feature_shape)` (batched) or `(Q, *feature_shape)`.
        batched: Whether the tensors carry a leading meta-batch dimension.
    """
    lead = 2 if batched else 1
    layout = "(B, S, *feature_shape)" if batched else "(S, *feature_shape)"
    label_layout = "(B, S)" if batched else "(S,)"
    if support_x.shape.rank is None or support_x.shape.rank <= lead:
        raise ValueError(f"Expected `support_x` of shape {layout}. Received: support_x.shape="
                         f"{support_x.shape}")
    if support_y.shape.rank != lead:
        raise ValueError(
            f"Expected `support_y` to be class labels of shape {label_layout}, one per support "
            f"example. Received: support_y.shape={support_y.shape}"
        )
    if not support_x.shape[:lead].is_compatible_with(support_y.shape):
        raise ValueError(
            "Expected one label per support example: `support_y.shape` must equal the leading "
            f"dimensions of `support_x`. Received: support_x.shape={support_x.shape}, "
            f"support_y.shape={support_y.shape}"
        )
    if not support_x.shape[lead:].is_compatible_with(query_x.shape[lead:]) or (
        query_x.shape.rank != support_x.shape.rank
    ):
        raise ValueError(
            "Expected `query_x` to have the rank and feature shape of `support_x`. Received: "
            f"support_x.shape={support_x.shape}, query_x.shape={query_x.shape}"
        )


def support_one_hot(support_y, num_ways=None) -> tf.Tensor:
    """One-hot support labels `(..., S, N)` float32, checking labels are `0..N-1`, all present.

    The checks are assertion ops: they raise `InvalidArgumentError` eagerly, and at run time in
    a graph (TF1 sessions included).

    Args:
        support_y: `(..., S)` integer labels.
        num_ways: `N`; inferred as `max(support_y) + 1` (a dynamic size) when None.

    Returns:
        `(..., S, N)` float32 one-hot labels.
    """
    support_y = tf.convert_to_tensor(support_y)
    checks = []
    if not support_y.dtype.is_integer:
        # Keras' default SavedModel signature feeds every input as float32.
        checks.append(tf.debugging.assert_equal(
            tf.math.floor(support_y), support_y,
            message="`support_y` must hold integer class labels 0..N-1"))
    with tf.control_dependencies(checks):
        labels = tf.cast(support_y, tf.int32)
    checks.append(tf.debugging.assert_non_negative(
        labels, message="`support_y` must hold class labels 0..N-1; found a negative label"))
    if num_ways is None:
        num_ways = tf.reduce_max(labels) + 1
    else:
        checks.append(tf.debugging.assert_less(
            labels, num_ways, message=f"`support_y` must hold class labels 0..{num_ways - 1} "
            f"(num_ways={num_ways}); found a larger label"))
    with tf.control_dependencies(checks):
        one_hot = tf.one_hot(labels, num_ways, dtype=tf.float32)
    present = tf.debugging.assert_positive(
        tf.reduce_sum(one_hot, axis=-2),
        message="Every class 0..N-1 needs at least one support example in every episode; "
        "relabel the classes of `support_y` to 0..N-1")
    with tf.control_dependencies([present]):
        return tf.identity(one_hot)


def encode_episode(encoder: keras.layers.Layer, support_x, query_x, training=None):
    """Runs `encoder` once on the support and query sets of a meta-batch.

    Args:
        encoder: Maps `(batch, *feature_shape)` to `(batch, *embedding_shape)`.
        support_x: `(B, S, *feature_shape)`.
        query_x: `(B, Q, *feature_shape)`.
        training: Passed to the encoder.

    Returns:
        `(support, query)` embeddings, `(B, S, *embedding_shape)` and `(B, Q, ...)`.
    """
    x = tf.concat([support_x, tf.cast(query_x, support_x.dtype)], axis=1)
    features = encoder(tf.reshape(x, [-1, *shape_list(x)[2:]]), training=training)
    features = tf.reshape(features, [*shape_list(x)[:2], *shape_list(features)[1:]])
    num_support = tf.shape(support_x)[1]
    return features[:, :num_support], features[:, num_support:]


def flatten_embeddings(x: tf.Tensor, lead: int) -> tf.Tensor:
    """`(*lead dims, *embedding_shape)` -> `(*lead dims, d)` float32."""
    dims = shape_list(x)
    return tf.cast(tf.reshape(x, [*dims[:lead], -1]), tf.float32)


class MetricMetaLearner(MetaLearner):
    """Base of the metric-based meta-learners: an encoder compared across support and query.

    Subclasses implement `episode_logits` and may override `build_head` to build layers that
    depend on the encoder's output shape.

    Args:
        encoder: Any Keras layer or model embedding one example.
        num_ways: `N` of the training episodes, a static size (TPU); inferred per meta-batch as
            `max(support_y) + 1` when None.
        **kwargs: `keras.Model` keyword arguments (`name`, `dtype`).
    """

    def __init__(self, encoder: keras.layers.Layer, num_ways: int | None = None, **kwargs):
        super().__init__(problem="classification", **kwargs)
        if not isinstance(encoder, keras.layers.Layer):
            raise ValueError(
                "Received an invalid value for `encoder`, expected a Keras layer or model "
                f"embedding one example, e.g. conv4(). Received: encoder={encoder!r}"
            )
        self.encoder = encoder
        self.num_ways = None if num_ways is None else check_positive_int("num_ways", num_ways)

    def build(self, input_shape):
        if not isinstance(input_shape, Mapping) or SUPPORT_X not in input_shape:
            raise ValueError(
                f"{type(self).__name__} is built from the shapes of an episode dict, e.g. "
                f"{{{SUPPORT_X!r}: (B, S, 28, 28, 1), ...}}. Received: input_shape={input_shape!r}"
            )
        feature_shape = tuple(input_shape[SUPPORT_X])[2:]
        spec = self.encoder.compute_output_spec(
            keras.KerasTensor((None, *feature_shape), dtype=self.compute_dtype))
        self.build_head(tuple(spec.shape))

    def build_head(self, embedding_shape: tuple) -> None:
        """Builds the layers after the encoder; `embedding_shape` is `(None, *dims)`."""

    def episode_logits(self, support_x, support_y, query_x, num_ways, training=None):
        """Predictions `(B, Q, N)` float32 of a meta-batch: logits, or what `call` documents."""
        raise NotImplementedError

    def call(self, episode: dict, training=None):
        keys = (SUPPORT_X, SUPPORT_Y, QUERY_X)
        missing = [k for k in keys if k not in episode] if isinstance(episode, Mapping) else keys
        if missing:
            raise ValueError(f"Expected an episode dict with keys {SUPPORT_X!r}, {SUPPORT_Y!r} "
                             f"and {QUERY_X!r}. Missing: {missing}")
        support_x, support_y, query_x = (
            tf.convert_to_tensor(episode[key]) for key in (SUPPORT_X, SUPPORT_Y, QUERY_X))
        check_episode_tensors(support_x, support_y, query_x, batched=True)
        return self.episode_logits(support_x, support_y, query_x, self.num_ways, training)

    def few_shot_logits(self, support_x, support_y, query_x) -> tf.Tensor:
        """Logits `(Q, N)` float32 for ONE episode of any number of ways and shots.

        Every size is read at run time (`N = max(support_y) + 1`), so this traces once in a
        `tf.function` with `None` dimensions and runs under the TF1 session loader. Trace it on
        a built model (trained, loaded, or called once): a first call inside a `tf.function`
        creates the variables there, which makes `tf.function` trace twice.

        Args:
            support_x: `(S, *feature_shape)`.
            support_y: `(S,)` integer labels in `0..N-1`, every class present.
            query_x: `(Q, *feature_shape)`.

        Returns:
            `(Q, N)` float32 logits.
        """
        support_x, support_y, query_x = (
            tf.convert_to_tensor(t) for t in (support_x, support_y, query_x))
        check_episode_tensors(support_x, support_y, query_x, batched=False)
        if not self.built:
            self.build({SUPPORT_X: (None, None, *support_x.shape[1:]), SUPPORT_Y: (None, None),
                        QUERY_X: (None, None, *query_x.shape[1:])})
        logits = self.episode_logits(support_x[None], support_y[None], query_x[None], None,
                                     training=False)
        return logits[0]

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("problem")
        return {**config, "encoder": keras.saving.serialize_keras_object(self.encoder),
                "num_ways": self.num_ways}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="tf_mtml")
class PrototypicalNetwork(MetricMetaLearner):
    """Prototypical Networks: each class is the mean embedding of its support examples.

    Snell, Swersky & Zemel, "Prototypical Networks for Few-shot Learning", NeurIPS 2017,
    https://arxiv.org/abs/1703.05175. A query's logit for class `n` is minus its distance to
    the prototype `c_n = mean_{k: y_k = n} f(x_k)`: the squared euclidean distance of the
    paper, or the cosine distance `1 - cos(f(q), c_n)`. Squared distances are expanded as
    `|q|^2 + |c|^2 - 2 q.c` (one matmul per episode); embeddings and logits are float32.

    Args:
        encoder: Any Keras layer or model embedding one example (outputs are flattened).
        distance: `"squared_euclidean"` or `"cosine"`.
        num_ways: Static `N` of the training episodes (TPU), or None to infer it.
        **kwargs: `keras.Model` keyword arguments.

    Call arguments:
        episode: Dict with `support_x` `(B, N*K, *feature_shape)`, `support_y` `(B, N*K)`
            int labels in `0..N-1`, `query_x` `(B, N*Q, *feature_shape)`.
        training: Passed to the encoder.

    Returns:
        Logits `(B, N*Q, N)` float32.

    Example:
        ```python
        learner = PrototypicalNetwork(conv4(), num_ways=5)
        logits = learner(episode)                      # (B, 5 * Q, 5)
        logits = learner.few_shot_logits(sx, sy, qx)   # one episode of any N, K, Q
        ```
    """

    def __init__(self, encoder: keras.layers.Layer, distance: str = "squared_euclidean",
                 num_ways: int | None = None, **kwargs):
        super().__init__(encoder, num_ways=num_ways, **kwargs)
        self.distance = check_choice("distance", distance, DISTANCES)

    def embed(self, x, training=None) -> tf.Tensor:
        """Embeddings `(batch, d)` float32 of examples `(batch, *feature_shape)`."""
        return flatten_embeddings(self.encoder(x, training=training), lead=1)

    def prototypes(self, support_embeddings, support_y, num_ways=None) -> tf.Tensor:
        """Class means `(..., N, d)` of `(..., S, d)` embeddings with labels `(..., S)`."""
        one_hot = support_one_hot(support_y, num_ways)
        sums = tf.linalg.matmul(one_hot, tf.cast(support_embeddings, tf.float32),
                                transpose_a=True)
        return sums / tf.reduce_sum(one_hot, axis=-2)[..., None]

    def episode_logits(self, support_x, support_y, query_x, num_ways, training=None):
        support, query = encode_episode(self.encoder, support_x, query_x, training)
        prototypes = self.prototypes(flatten_embeddings(support, 2), support_y, num_ways)
        query = flatten_embeddings(query, 2)
        if self.distance == "cosine":
            similarity = tf.linalg.matmul(ops.normalize(query, axis=-1),
                                          ops.normalize(prototypes, axis=-1), transpose_b=True)
            return similarity - 1.0
        squared = (tf.reduce_sum(tf.square(query), axis=-1)[..., :, None]
                   + tf.reduce_sum(tf.square(prototypes), axis=-1)[..., None, :]
                   - 2.0 * tf.linalg.matmul(query, prototypes, transpose_b=True))
        return -squared

    def get_config(self) -> dict:
        return {**super().get_config(), "distance": self.distance}
