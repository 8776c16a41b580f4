"""Matching Networks: a query's class distribution is attention over the labelled support set."""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from tf_mtml.layers._validation import check_positive_int
from tf_mtml.meta.prototypical import (
    MetricMetaLearner,
    encode_episode,
    flatten_embeddings,
    shape_list,
    support_one_hot,
)


@keras.saving.register_keras_serializable(package="tf_mtml")
class MatchingNetwork(MetricMetaLearner):
    """Matching Networks with cosine attention and optional full context embeddings (FCE).

    Vinyals et al., "Matching Networks for One Shot Learning", NeurIPS 2016,
    https://arxiv.org/abs/1606.04080. A query `q` gets the class distribution
    `P(y | q, S) = sum_i a(q, x_i) y_i` with `a(q, x_i) = softmax_i(cos(f(q), g(x_i)))` and
    one-hot support labels `y_i`.

    **The model returns `log P(y | q, S)` as its logits.** `softmax(log P) = P`, so the shared
    sparse softmax cross-entropy of `MetaLearner` is exactly the paper's `-log P(y | q, S)`,
    and `argmax` is the paper's prediction.

    With `fce=True` the embeddings see the whole support set (paper, appendix A): the support
    embeddings become `g(x_i, S) = g'(x_i) + h_fw_i + h_bw_i` (a bidirectional LSTM over the
    support sequence, in episode order), and each query embedding is refined for `fce_steps`
    steps by an attention LSTM reading the support set,
    `h_k = h_hat_k + f'(q)`, `r_k = sum_i softmax_i(h_k . g(x_i)) g(x_i)`,
    `h_hat_{k+1}, c_{k+1} = LSTM(f'(q), [h_k + r_k, c_k])` (the state `[h, r]` is summed rather
    than concatenated so that the LSTM width stays `d`). FCE is not invariant to the order of
    the support set; plain matching is.

    Args:
        encoder: Any Keras layer or model embedding one example (outputs are flattened); it
            is shared by the support (`g'`) and the queries (`f'`).
        fce: Whether to use full context embeddings.
        fce_steps: Processing steps of the query attention LSTM (used when `fce`).
        num_ways: Static `N` of the training episodes (TPU), or None to infer it.
        **kwargs: `keras.Model` keyword arguments.

    Call arguments:
        episode: Dict with `support_x` `(B, N*K, *feature_shape)`, `support_y` `(B, N*K)`
            int labels in `0..N-1`, `query_x` `(B, N*Q, *feature_shape)`.
        training: Passed to the encoder.

    Returns:
        Log-probabilities `(B, N*Q, N)` float32, used as logits.

    Example:
        ```python
        learner = MatchingNetwork(conv4(), fce=True)
        log_probs = learner(episode)  # (B, N * Q, N)
        ```
    """

    def __init__(self, encoder: keras.layers.Layer, fce: bool = False, fce_steps: int = 2,
                 num_ways: int | None = None, **kwargs):
        super().__init__(encoder, num_ways=num_ways, **kwargs)
        self.fce = bool(fce)
        self.fce_steps = check_positive_int("fce_steps", fce_steps)

    def build_head(self, embedding_shape: tuple) -> None:
        if not self.fce:
            return
        if any(d is None for d in embedding_shape[1:]):
            raise ValueError(
                "Full context embeddings need an encoder with a static output size. Received: "
                f"encoder output shape {embedding_shape}"
            )
        units = math.prod(embedding_shape[1:])
        self.support_lstm = keras.layers.Bidirectional(
            keras.layers.LSTM(units, return_sequences=True, dtype=self.dtype_policy),
            merge_mode="sum", dtype=self.dtype_policy, name="support_lstm")
        self.support_lstm.build((None, None, units))
        self.query_cell = keras.layers.LSTMCell(units, dtype=self.dtype_policy, name="query_lstm")
        self.query_cell.build((None, units))

    def _support_context(self, support: tf.Tensor) -> tf.Tensor:
        """`g(x_i, S)`: `(B, S, d)` -> `(B, S, d)` float32."""
        return support + tf.cast(self.support_lstm(support), tf.float32)

    def _query_context(self, query: tf.Tensor, support: tf.Tensor) -> tf.Tensor:
        """`f(q, S)`: attention-LSTM refinement of `(B, Q, d)` queries, float32."""
        dims = shape_list(query)
        flat_query = tf.reshape(query, [-1, dims[2]])
        h_hat = tf.zeros_like(query)
        cell_state = tf.zeros_like(flat_query)
        for _ in range(self.fce_steps):
            h = h_hat + query
            attention = tf.nn.softmax(tf.linalg.matmul(h, support, transpose_b=True), axis=-1)
            readout = tf.linalg.matmul(attention, support)
            state = [tf.reshape(h + readout, [-1, dims[2]]), cell_state]
            h_hat, (_, cell_state) = self.query_cell(flat_query, state)
            h_hat = tf.reshape(tf.cast(h_hat, tf.float32), dims)
            cell_state = tf.cast(cell_state, tf.float32)
        return h_hat + query

    def episode_logits(self, support_x, support_y, query_x, num_ways, training=None):
        support, query = encode_episode(self.encoder, support_x, query_x, training)
        support, query = flatten_embeddings(support, 2), flatten_embeddings(query, 2)
        if self.fce:
            support = self._support_context(support)
            query = self._query_context(query, support)
        cosine = tf.linalg.matmul(ops.normalize(query, axis=-1), ops.normalize(support, axis=-1),
                                  transpose_b=True)
        attention = tf.nn.softmax(cosine, axis=-1)
        # Cosines lie in [-1, 1], so every attention weight is at least exp(-2) / S: the
        # probability of a class with a support example is never 0 and its log is finite.
        return tf.math.log(tf.linalg.matmul(attention, support_one_hot(support_y, num_ways)))

    def get_config(self) -> dict:
        return {**super().get_config(), "fce": self.fce, "fce_steps": self.fce_steps}
