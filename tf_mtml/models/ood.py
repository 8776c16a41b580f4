"""Out-of-distribution and distribution-shift scores from distances in embedding space.

The score is the k-nearest-neighbour distance of Sun et al., "Out-of-Distribution Detection
with Deep Nearest Neighbors", ICML 2022 (https://arxiv.org/abs/2204.06507): the euclidean
distance from an L2-normalised embedding to its k-th nearest L2-normalised *training*
embedding (not to class centroids, so it needs no labels and follows multi-modal classes).
An input far from everything the encoder was trained on scores high.

The threshold is calibrated without any out-of-distribution data: it is the `quantile` of the
leave-one-out scores of the reference embeddings themselves, so about `1 - quantile` of
in-distribution inputs are flagged. A batch whose flagged fraction is far above that rate has
shifted; `distribution_shift_z` turns the count into a binomial z-statistic.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from tf_mtml.layers._validation import check_positive_int


def _check_quantile(quantile) -> float:
    if isinstance(quantile, bool) or not isinstance(quantile, int | float) or not (
            0 < quantile < 1):
        raise ValueError(
            "Received an invalid value for `quantile`, expected a float in (0, 1) (the share "
            "of in-distribution inputs scored below the threshold). "
            f"Received: quantile={quantile!r}"
        )
    return float(quantile)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@keras.saving.register_keras_serializable(package="tf_mtml")
class KNNOODScorer(keras.layers.Layer):
    """Distance to the k-th nearest reference embedding, with a calibrated threshold.

    The `num_references` reference embeddings are a non-trainable weight (they are saved in
    checkpoints, `.keras` files and SavedModels); `adapt` fills them and the threshold.
    Neighbours are ranked by cosine similarity (one matmul); distances between the unit
    vectors are float32 and lie in `[0, 2]`.

    Args:
        num_references: `M`, number of reference embeddings (a static weight shape).
        num_neighbors: `k`; the score is the distance to the k-th nearest reference.
            Sun et al. use k = 1 % of the training set (e.g. 10 for 1,000 references).
        quantile: Share of the references' leave-one-out scores below the threshold.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        embeddings: `(batch, d)`; normalised inside, so raw encoder outputs work.

    Returns:
        Scores `(batch,)` float32. Calling before `adapt` fails at run time.

    Example:
        ```python
        scorer = KNNOODScorer(num_references=len(train_h), num_neighbors=10)
        scorer.adapt(train_h)                  # reference set and threshold
        scores = scorer(test_h)                # (batch,)
        flagged = scorer.is_outlier(test_h)    # scores > scorer.threshold
        ```
    """

    def __init__(self, num_references: int, num_neighbors: int = 1, quantile: float = 0.95,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_references = check_positive_int("num_references", num_references)
        self.num_neighbors = check_positive_int("num_neighbors", num_neighbors)
        if num_neighbors >= num_references:
            raise ValueError(
                "Received an invalid value for `num_neighbors`, expected fewer neighbours than "
                f"references (the leave-one-out calibration drops each reference's own match). "
                f"Received: num_neighbors={num_neighbors}, num_references={num_references}"
            )
        self.quantile = _check_quantile(quantile)

    def build(self, input_shape):
        dim = input_shape[-1]
        self.references = self.add_weight(shape=(self.num_references, dim), initializer="zeros",
                                          trainable=False, dtype="float32", name="references")
        self.threshold = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                         dtype="float32", name="threshold")

    def adapt(self, embeddings) -> KNNOODScorer:
        """Stores `embeddings` (normalised) as the references and calibrates the threshold.

        Args:
            embeddings: `(num_references, d)` in-distribution (training) embeddings.

        Returns:
            This layer.
        """
        embeddings = np.asarray(keras.ops.convert_to_numpy(embeddings), np.float64)
        if embeddings.ndim != 2 or len(embeddings) != self.num_references or not np.all(
                np.isfinite(embeddings)):
            raise ValueError(
                f"Received invalid reference embeddings, expected a finite array of shape "
                f"({self.num_references}, d) (`num_references` rows). Received: shape="
                f"{embeddings.shape}, finite={bool(np.all(np.isfinite(embeddings)))}"
            )
        if not self.built:
            self.build(embeddings.shape)
        if embeddings.shape[1] != self.references.shape[1]:
            raise ValueError(
                f"Received reference embeddings of size {embeddings.shape[1]}, but this scorer "
                f"was built for size {self.references.shape[1]}.")
        units = _unit_rows(embeddings)
        similarity = units @ units.T
        np.fill_diagonal(similarity, -np.inf)  # leave one out: never a reference's own match
        kth = -np.partition(-similarity, self.num_neighbors - 1, axis=1)[:, self.num_neighbors - 1]
        scores = np.sqrt(np.maximum(2.0 - 2.0 * kth, 0.0))
        self.references.assign(units.astype(np.float32))
        self.threshold.assign(np.quantile(scores, self.quantile))
        return self

    def call(self, embeddings):
        x = keras.ops.normalize(keras.ops.cast(embeddings, "float32"), axis=-1)
        # Normalised references have unit rows (or zero ones, for zero embeddings); none of
        # unit norm means `adapt` never ran.
        adapted = tf.debugging.assert_greater(
            tf.reduce_max(tf.reduce_sum(tf.square(self.references), axis=1)), 0.5,
            message="KNNOODScorer has no reference embeddings: call `adapt(train_embeddings)` "
            "before scoring")
        with tf.control_dependencies([adapted]):
            similarity = tf.linalg.matmul(x, self.references, transpose_b=True)
        # Ranked by similarity (one matmul), measured directly: `sqrt(2 - 2 cos)` would lose
        # all precision in float32 for near-duplicates.
        nearest = tf.math.top_k(similarity, self.num_neighbors).indices[:, -1]
        return tf.norm(x - tf.gather(self.references, nearest), axis=-1)

    def is_outlier(self, embeddings):
        """Boolean `(batch,)`: whether each score exceeds the calibrated threshold."""
        return self(embeddings) > self.threshold

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_references": self.num_references,
                "num_neighbors": self.num_neighbors, "quantile": self.quantile}


def distribution_shift_z(num_flagged: int, num_inputs: int, quantile: float = 0.95) -> float:
    """Binomial z-statistic of a batch's outlier count against the calibrated rate.

    Without shift each input is flagged with probability `p = 1 - quantile`, so the count is
    Binomial(n, p) and `z = (flagged - n p) / sqrt(n p (1 - p))` is about standard normal;
    `z > 3` says the batch comes from elsewhere. Calibration on finitely many references
    makes `p` itself approximate, so read small `z` values loosely.

    Args:
        num_flagged: Inputs of the batch that `KNNOODScorer.is_outlier` flagged.
        num_inputs: Inputs in the batch.
        quantile: The scorer's `quantile`.

    Returns:
        The z-statistic (float).
    """
    check_positive_int("num_inputs", num_inputs)
    if isinstance(num_flagged, bool) or not isinstance(num_flagged, int | np.integer) or not (
            0 <= num_flagged <= num_inputs):
        raise ValueError(
            "Received an invalid value for `num_flagged`, expected an integer in "
            f"[0, num_inputs={num_inputs}]. Received: num_flagged={num_flagged!r}")
    p = 1.0 - _check_quantile(quantile)
    return (num_flagged - num_inputs * p) / math.sqrt(num_inputs * p * (1.0 - p))
