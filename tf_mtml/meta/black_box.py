"""Black-box meta-learner: attention over the labelled support set predicts the query labels."""

from __future__ import annotations

import math

import keras
from keras import ops

from tf_mtml.layers._validation import check_positive_int, check_rate
from tf_mtml.meta.base import QUERY_X, SUPPORT_X, SUPPORT_Y, MetaLearner
from tf_mtml.meta.prototypical import encode_episode, flatten_embeddings, support_one_hot


class _AttentionBlock(keras.layers.Layer):
    """Post-norm transformer block whose tokens attend to a context set (themselves or not)."""

    def __init__(self, units: int, num_heads: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.attention = keras.layers.MultiHeadAttention(
            num_heads, units // num_heads, dropout=dropout, dtype=self.dtype_policy,
            name="attention")
        self.attention_norm = keras.layers.LayerNormalization(dtype=self.dtype_policy,
                                                              name="attention_norm")
        self.hidden = keras.layers.Dense(2 * units, "relu", dtype=self.dtype_policy,
                                         name="hidden")
        self.projection = keras.layers.Dense(units, dtype=self.dtype_policy, name="projection")
        self.output_norm = keras.layers.LayerNormalization(dtype=self.dtype_policy,
                                                           name="output_norm")

    def build(self, tokens_shape, context_shape):
        self.attention.build(tokens_shape, context_shape)
        self.attention_norm.build(tokens_shape)
        self.hidden.build(tokens_shape)
        self.projection.build((*tokens_shape[:-1], self.hidden.units))
        self.output_norm.build(tokens_shape)

    def call(self, tokens, context, training=None):
        tokens = self.attention_norm(
            tokens + self.attention(tokens, context, training=training))
        return self.output_norm(tokens + self.projection(self.hidden(tokens)))


@keras.saving.register_keras_serializable(package="tf_mtml")
class BlackBoxLearner(MetaLearner):
    """Black-box ("mechanistic") meta-learner: a network reads the support set, labels included.

    The learning algorithm is itself a network, as in SNAIL (Mishra et al., "A Simple Neural
    Attentive Meta-Learner", ICLR 2018, https://arxiv.org/abs/1707.03141) and attentive
    neural processes (Kim et al. 2019, https://arxiv.org/abs/1901.05761; Garnelo et al. 2018,
    https://arxiv.org/abs/1807.01622). Each support example becomes a token
    `[encoder(x) ; label]`, each query `[encoder(x) ; 0]`, where `label` is `one_hot(y, N)`
    (classification) or `[y ; 1]` (regression: the 1 tells a support target of 0 from a query).
    Tokens are projected to `units`; each of `num_blocks` blocks lets the support tokens attend
    to each other, then the query tokens attend to the support tokens (post-norm transformer
    blocks: attention and a 2-layer feed-forward network, each with a residual connection
    and layer normalization). A dense head maps each query token to `N` logits (or the target).

    There is no positional encoding and queries attend only to support tokens, so the
    predictions are invariant to the order of the support set and each query's prediction is
    independent of the other queries.

    Args:
        encoder: Any Keras layer or model embedding one example (outputs are flattened).
        num_ways: Number of classes `N` (classification; ignored for regression).
        units: Width of the tokens.
        num_blocks: Number of attention blocks.
        num_heads: Attention heads; must divide `units`.
        dropout: Attention dropout rate in training, `[0, 1)`.
        problem: `"classification"` or `"regression"`.
        **kwargs: Base `keras.Model` keyword arguments.

    Call arguments:
        episode: Dict with `support_x` `(B, S, *feature_shape)`, `support_y` (`(B, S)` int
            labels in `0..N-1`, or `(B, S, T)` float targets) and `query_x`
            `(B, Q, *feature_shape)`.
        training: Passed to the encoder and the attention dropout.

    Returns:
        Logits `(B, Q, N)`, or predicted targets `(B, Q, T)`, float32.

    Example:
        ```python
        encoder = keras.Sequential([keras.layers.Dense(64, "relu")])
        learner = BlackBoxLearner(encoder, num_ways=5, units=64, num_blocks=2, num_heads=4)
        logits = learner(episode)  # (B, 5 * Q, 5)
        sine = BlackBoxLearner(keras.Sequential([keras.layers.Dense(40, "relu")]),
                               problem="regression")
        ```
    """

    def __init__(self, encoder: keras.layers.Layer, num_ways: int | None = None, units: int = 64,
                 num_blocks: int = 2, num_heads: int = 4, dropout: float = 0.0,
                 problem: str = "classification", **kwargs):
        super().__init__(problem=problem, **kwargs)
        self.encoder = encoder
        self.num_ways = (check_positive_int("num_ways", num_ways)
                         if problem == "classification" else num_ways)
        self.units = check_positive_int("units", units)
        self.num_blocks = check_positive_int("num_blocks", num_blocks)
        self.num_heads = check_positive_int("num_heads", num_heads)
        if units % num_heads:
            raise ValueError(
                "Received an invalid value for `num_heads`, expected a divisor of "
                f"`units`={units} (each head has `units // num_heads` dimensions). "
                f"Received: num_heads={num_heads}"
            )
        self.dropout = check_rate("dropout", dropout)
        self.token_projection = keras.layers.Dense(units, dtype=self.dtype_policy,
                                                   name="token_projection")
        self.support_blocks = [
            _AttentionBlock(units, num_heads, self.dropout, dtype=self.dtype_policy,
                            name=f"support_block_{i}") for i in range(num_blocks)]
        self.query_blocks = [
            _AttentionBlock(units, num_heads, self.dropout, dtype=self.dtype_policy,
                            name=f"query_block_{i}") for i in range(num_blocks)]
        self.head = None

    def build(self, episode_shape):
        missing = sorted({SUPPORT_X, SUPPORT_Y, QUERY_X} - set(episode_shape))
        if missing:
            raise ValueError(f"Expected an episode dict with keys {SUPPORT_X!r}, {SUPPORT_Y!r} "
                             f"and {QUERY_X!r}. Missing: {missing}")
        support_y_shape = tuple(episode_shape[SUPPORT_Y])
        if self.problem == "classification":
            label_dim = output_dim = self.num_ways
        else:
            if len(support_y_shape) != 3 or support_y_shape[-1] is None:
                raise ValueError(
                    "BlackBoxLearner(problem='regression') expects `support_y` of shape "
                    f"`(B, K, T)` with a known T. Received: shape={support_y_shape}"
                )
            output_dim = support_y_shape[-1]
            label_dim = output_dim + 1
        feature_shape = (None, *tuple(episode_shape[SUPPORT_X])[2:])
        if not self.encoder.built:
            self.encoder.build(feature_shape)
        feature_dim = math.prod(self.encoder.compute_output_shape(feature_shape)[1:])
        self.token_projection.build((None, None, feature_dim + label_dim))
        tokens_shape = (None, None, self.units)
        for block in (*self.support_blocks, *self.query_blocks):
            block.build(tokens_shape, tokens_shape)
        self.head = keras.layers.Dense(output_dim, dtype=self.dtype_policy, name="head")
        self.head.build(tokens_shape)
        self.built = True

    def _labels(self, support_y):
        """The label part of the support tokens, `(B, S, label_dim)` float32.

        Classification labels are checked to lie in `0..N-1` (assertion ops).
        """
        if self.problem == "classification":
            return support_one_hot(support_y, self.num_ways)
        targets = ops.cast(support_y, "float32")
        return ops.concatenate([targets, ops.ones_like(targets[..., :1])], axis=-1)

    def call(self, episode: dict, training=None):
        labels = self._labels(episode[SUPPORT_Y])
        support, query = (flatten_embeddings(e, 2) for e in encode_episode(
            self.encoder, episode[SUPPORT_X], episode[QUERY_X], training))
        support = self.token_projection(ops.concatenate([support, labels], axis=-1))
        no_labels = ops.zeros((*ops.shape(query)[:2], labels.shape[-1]))
        query = self.token_projection(ops.concatenate([query, no_labels], axis=-1))
        for support_block, query_block in zip(self.support_blocks, self.query_blocks,
                                              strict=True):
            support = support_block(support, support, training=training)
            query = query_block(query, support, training=training)
        return ops.cast(self.head(query), "float32")

    def get_config(self) -> dict:
        return {**super().get_config(),
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "num_ways": self.num_ways, "units": self.units, "num_blocks": self.num_blocks,
                "num_heads": self.num_heads, "dropout": self.dropout}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)
