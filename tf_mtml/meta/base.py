"""The interface every meta-learner implements, so one task family trains and serves them all.

An *episode* is a dict of tensors (see `tf_mtml.data.episodes`):

- `support_x`: `(B, N*K, *feature_shape)` float, `support_y`: `(B, N*K)` int32 labels in
  `0..N-1` (classification) or `(B, K, 1)` float targets (regression);
- `query_x`: `(B, N*Q, *feature_shape)`, `query_y`: `(B, N*Q)` or `(B, Q, 1)`.

`B` is the (per-replica) meta-batch of episodes. A meta-learner is a `keras.Model` whose
`call(episode)` adapts to each episode's support set and returns predictions for its query set:
logits `(B, N*Q, N)` for classification, values `(B, Q, 1)` for regression. Being a Keras model,
its variables are checkpointed, distributed and optimized like any other model's.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from tf_mtml.meta.metrics import MeanWithConfidence

PROBLEMS = ("classification", "regression")
SUPPORT_X, SUPPORT_Y, QUERY_X, QUERY_Y = "support_x", "support_y", "query_x", "query_y"


def validate_problem(problem: str) -> str:
    if problem not in PROBLEMS:
        raise ValueError(
            f"Received an invalid value for `problem`, expected one of {PROBLEMS}. "
            f"Received: problem={problem!r}"
        )
    return problem


def query_losses(problem: str, y_true, y_pred):
    """Per-query losses `(B, num_queries)`: sparse softmax cross-entropy, or squared error."""
    if problem == "classification":
        return keras.ops.sparse_categorical_crossentropy(
            keras.ops.cast(y_true, "int32"), keras.ops.cast(y_pred, "float32"), from_logits=True)
    error = keras.ops.cast(y_pred, "float32") - keras.ops.cast(y_true, "float32")
    return keras.ops.mean(keras.ops.square(error), axis=-1)


def episode_scores(problem: str, y_true, y_pred):
    """Per-episode score `(B,)`: query accuracy (classification) or query MSE (regression)."""
    if problem == "classification":
        predicted = keras.ops.argmax(y_pred, axis=-1)
        hits = keras.ops.equal(predicted, keras.ops.cast(y_true, predicted.dtype))
        return keras.ops.mean(keras.ops.cast(hits, "float32"), axis=-1)
    return keras.ops.mean(query_losses(problem, y_true, y_pred), axis=-1)


class MetaLearner(keras.Model):
    """Base class: `call(episode, training)` -> query predictions for a meta-batch.

    Subclasses implement `call`. Algorithms whose outer update is not the gradient of the
    query loss (Reptile) override `train_gradients`. `metrics` holds one `MeanWithConfidence`
    of the per-episode query accuracy (classification) or MSE (regression), reported with its
    95% interval.

    Args:
        problem: `"classification"` (integer labels, logits out) or `"regression"`.
    """

    def __init__(self, problem: str = "classification", **kwargs):
        super().__init__(**kwargs)
        self.problem = validate_problem(problem)
        self.score_tracker = MeanWithConfidence(
            name="accuracy" if problem == "classification" else "mse")

    @property
    def metrics(self) -> list:
        return [self.score_tracker]

    def update_episode_metrics(self, episode: dict, predictions) -> None:
        """Adds each episode's query accuracy (or MSE) to `score_tracker`."""
        self.score_tracker.update_state(
            episode_scores(self.problem, episode[QUERY_Y], predictions))

    def episode_losses(self, episode: dict, predictions) -> tf.Tensor:
        """Mean query loss of each episode, `(B,)` float32."""
        return keras.ops.mean(query_losses(self.problem, episode[QUERY_Y], predictions), axis=-1)

    def train_gradients(self, episode: dict, global_batch_size: int,
                        scale_loss: Callable | None = None):
        """Loss and gradients of one replica's share of a meta-batch.

        Args:
            episode: This replica's episodes (leading dimension = its meta-batch).
            global_batch_size: Episodes per step over all replicas; the loss is the replica's
                sum of episode losses divided by it (`tf.nn.compute_average_loss`), so that
                summing gradients over replicas gives the gradient of the global mean.
            scale_loss: Optional `optimizer.scale_loss` (loss scaling for float16).

        Returns:
            `(loss, gradients, predictions)`; gradients align with `self.trainable_variables`.
        """
        with tf.GradientTape() as tape:
            predictions = self(episode, training=True)
            loss = tf.nn.compute_average_loss(self.episode_losses(episode, predictions),
                                              global_batch_size=global_batch_size)
            scaled = scale_loss(loss) if scale_loss is not None else loss
        return loss, tape.gradient(scaled, self.trainable_variables), predictions

    def get_config(self) -> dict:
        return {**super().get_config(), "problem": self.problem}


class LearnerWrapper(MetaLearner):
    """Base of the learners that adapt the weights of a wrapped Keras `learner` model.

    Holds the serialization shared by MAML, Reptile and the LSTM meta-optimizer: the learner is
    saved as a nested Keras object beside the inner-loop settings; subclasses add their own
    fields to `get_config`.
    """

    def adapt_and_predict(self, support_x, support_y, query_x, steps: int | None = None):
        """Adapts to one episode's support set and predicts its query set (inference path).

        Traceable with unknown numbers of support and query examples, e.g. in a
        `tf.function` with input signature `(None, *feature_shape)` (the served export).
        Subclasses implement `adapt(support_x, support_y, steps)` and
        `predict_with(params, x)`.

        Args:
            support_x: `(S, *feature_shape)` support examples.
            support_y: `(S,)` labels or `(S, 1)` targets.
            query_x: `(Q, *feature_shape)` query examples.
            steps: Inner steps; `eval_inner_steps` if None, as in `call(..., training=False)`.

        Returns:
            Query predictions `(Q, N)` or `(Q, 1)`.
        """
        steps = self.eval_inner_steps if steps is None else steps
        return self.predict_with(self.adapt(support_x, support_y, steps), query_x)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "learner": keras.saving.serialize_keras_object(self.learner),
            "inner_lr": self.inner_lr,
            "inner_steps": self.inner_steps,
            "eval_inner_steps": self.eval_inner_steps,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None):
        config = dict(config)
        learner = keras.saving.deserialize_keras_object(config.pop("learner"),
                                                        custom_objects=custom_objects)
        return cls(learner=learner, **config)
