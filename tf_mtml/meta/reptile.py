"""Reptile: move the initialisation toward the weights that SGD reaches on each task."""

from __future__ import annotations

import math
from collections.abc import Callable

import keras
import tensorflow as tf

from tf_mtml.meta.base import QUERY_X, SUPPORT_X, SUPPORT_Y, LearnerWrapper
from tf_mtml.meta.fast_weights import (
    functional_call,
    gradient_step,
    non_trainable_values,
    trainable_values,
)
from tf_mtml.meta.maml import check_steps, support_loss


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_learner(learner) -> keras.Model:
    """Returns `learner` if it is a built Keras model, else raises."""
    if not isinstance(learner, keras.Model):
        raise ValueError(
            "Received an invalid value for `learner`, expected a `keras.Model`. "
            f"Received: learner={learner!r}"
        )
    if not learner.built or not learner.trainable_variables:
        raise ValueError(
            f"The learner {learner.name!r} is not built (or has no trainable variables): the "
            "meta-learner adapts its variables, which must exist. Build it first, e.g. "
            "`learner.build(input_shape)`, call it once on data, or start it with "
            "`keras.Input(shape)`."
        )
    return learner


def learner_dtype_kwargs(learner: keras.Model, kwargs: dict) -> dict:
    """`kwargs` with the dtype of the learner's variables as default policy of the meta-learner.

    A mixed policy on the meta-learner would autocast the fast weights it reads to float16;
    the learner's own policy sets the precision of its computations.
    """
    kwargs = {"dtype": learner.trainable_variables[0].dtype, **kwargs}
    policy = keras.dtype_policies.get(kwargs["dtype"])
    if policy.compute_dtype != policy.variable_dtype:
        raise ValueError(
            "Received an invalid value for `dtype`, expected a policy that computes in its "
            "variable dtype (e.g. 'float32'), so that fast weights keep the precision of the "
            f"learner's variables; give the learner the mixed policy instead. "
            f"Received: dtype={policy.name!r}"
        )
    return kwargs


def check_inner_lr(value) -> float:
    """Returns `value` as a float if it is a positive number, else raises."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            math.isfinite(value) and value > 0):
        raise ValueError(
            "Received an invalid value for `inner_lr`, expected a finite positive float (the inner "
            f"SGD learning rate). Received: inner_lr={value!r}"
        )
    return float(value)


@keras.saving.register_keras_serializable(package="tf_mtml")
class Reptile(LearnerWrapper):
    """Reptile, a first-order meta-learner (Nichol, Achiam & Schulman 2018).

    https://arxiv.org/abs/1803.02999. For each episode `i`, plain SGD on the support set starts
    from the learner's weights `theta` and reaches `phi_i` after `inner_steps` steps; the outer
    update moves `theta` toward them: `theta <- theta + epsilon * (mean_i phi_i - theta)`.

    `train_gradients` returns the outer "gradient" `sum_i (theta - phi_i) / global_batch_size`
    over this replica's episodes. Summed over replicas (what `optimizer.apply_gradients` does
    under `tf.distribute`), it is `theta - mean_i phi_i` over the global meta-batch, so
    `keras.optimizers.SGD(learning_rate=epsilon)` performs exactly the Reptile update above
    (any other optimizer, e.g. Adam, treats it as a gradient). Its loss, for logging only, is
    the query loss after adaptation.

    With `inner_batch_size`, each inner step takes `inner_batch_size` support examples, in a
    fixed order given by `seed` (a permutation of the support positions, visited cyclically),
    so that class-major episodes give mixed mini-batches; otherwise every step uses the whole
    support set. The learner always runs with `training=True`: BatchNormalization normalises
    with the statistics of the batch at hand (support or query, transductively, as in the
    paper) and its moving statistics are never updated. Adaptation never changes the
    learner's variables.

    Args:
        learner: A built Keras model mapping a batch of examples to logits (classification)
            or values (regression); its variables are the meta-learned initialisation.
        inner_lr: Learning rate of the inner SGD.
        inner_steps: Inner SGD steps per episode in training (0: no adaptation, zero outer
            gradient).
        eval_inner_steps: Inner steps in inference (`training=False`, `adapt_and_predict`);
            `inner_steps` if None. The paper adapts longer at meta-test time.
        inner_batch_size: Support examples per inner step; None for the whole support set.
        seed: Seed of the order in which mini-batches visit the support set.
        problem: `"classification"` or `"regression"`.
        **kwargs: Base model keyword arguments.

    Call arguments:
        episode: Dict with `support_x` `(B, S, ...)`, `support_y` `(B, S)` or `(B, S, 1)`,
            `query_x` `(B, Q, ...)`.

    Returns:
        Query predictions after adaptation, `(B, Q, ...)` float32.

    Example:
        ```python
        learner = keras.Sequential([keras.Input((28, 28, 1)), ..., keras.layers.Dense(5)])
        reptile = Reptile(learner, inner_lr=1e-3, inner_steps=5, inner_batch_size=10)
        params = reptile.adapt(support_x, support_y)  # one episode
        logits = reptile.predict_with(params, query_x)
        optimizer = keras.optimizers.SGD(learning_rate=1.0)  # epsilon
        loss, grads, _ = reptile.train_gradients(episodes, global_batch_size=5)
        optimizer.apply_gradients(zip(grads, reptile.trainable_variables))
        ```
    """

    def __init__(
        self,
        learner: keras.Model,
        inner_lr: float = 0.01,
        inner_steps: int = 5,
        eval_inner_steps: int | None = None,
        inner_batch_size: int | None = None,
        seed: int = 0,
        problem: str = "classification",
        **kwargs,
    ):
        learner = check_learner(learner)
        super().__init__(problem=problem, **learner_dtype_kwargs(learner, kwargs))
        self.learner = learner
        self.inner_lr = check_inner_lr(inner_lr)
        self.inner_steps = check_steps("inner_steps", inner_steps)
        self.eval_inner_steps = (self.inner_steps if eval_inner_steps is None
                                 else check_steps("eval_inner_steps", eval_inner_steps))
        if inner_batch_size is not None and (not _is_int(inner_batch_size)
                                             or inner_batch_size < 1):
            raise ValueError(
                "Received an invalid value for `inner_batch_size`, expected a positive integer "
                f"or None (whole support set). Received: inner_batch_size={inner_batch_size!r}"
            )
        self.inner_batch_size = inner_batch_size
        if not _is_int(seed) or seed < 0:
            raise ValueError(
                "Received an invalid value for `seed`, expected a non-negative integer. "
                f"Received: seed={seed!r}"
            )
        self.seed = seed
        # The learner is built and Reptile has no variables of its own.
        self.built = True

    def minibatch_indices(self, num_examples, step) -> tf.Tensor:
        """Support positions used by inner step `step`, `(inner_batch_size,)` int32."""
        order = tf.argsort(tf.random.stateless_uniform(
            tf.reshape(num_examples, (1,)), seed=(self.seed, 0)))
        positions = (step * self.inner_batch_size + tf.range(self.inner_batch_size))
        return tf.gather(order, positions % num_examples)

    def adapt(self, support_x, support_y, steps: int | None = None) -> list[tf.Tensor]:
        """Fast weights after SGD on one episode's support set; the variables are untouched.

        Args:
            support_x: `(S, ...)` support inputs of one episode.
            support_y: `(S,)` labels or `(S, 1)` targets.
            steps: Inner steps, `inner_steps` if None.

        Returns:
            One tensor per `learner.trainable_variables`.
        """
        steps = self.inner_steps if steps is None else check_steps("steps", steps)
        non_trainable = non_trainable_values(self.learner)
        num_examples = tf.shape(support_x)[0]

        def step_fn(step, params):
            x, y = support_x, support_y
            if self.inner_batch_size is not None:
                indices = self.minibatch_indices(num_examples, step)
                x, y = tf.gather(support_x, indices), tf.gather(support_y, indices)

            def loss_fn(values):
                return support_loss(self.problem, y, functional_call(
                    self.learner, values, x, training=True, non_trainable=non_trainable))

            params, _ = gradient_step(loss_fn, params, self.inner_lr, first_order=True)
            return step + 1, params

        _, params = tf.while_loop(lambda step, _: step < steps, step_fn,
                                  (tf.constant(0), trainable_values(self.learner)),
                                  maximum_iterations=steps)
        return params

    def predict_with(self, params, x) -> tf.Tensor:
        """The learner's outputs on `x` with `params` (from `adapt`) as its weights."""
        return functional_call(self.learner, params, x, training=True)

    def _adapt_episodes(self, episode: dict, steps: int):
        """Per-episode fast weights `(B, *shape)` and query predictions `(B, Q, ...)`."""
        def adapt_one(inputs):
            support_x, support_y, query_x = inputs
            params = self.adapt(support_x, support_y, steps)
            return params, keras.ops.cast(self.predict_with(params, query_x), "float32")

        signature = ([tf.TensorSpec(v.shape, v.dtype) for v in self.learner.trainable_variables],
                     tf.TensorSpec(None, "float32"))
        return tf.map_fn(adapt_one, (episode[SUPPORT_X], episode[SUPPORT_Y], episode[QUERY_X]),
                         fn_output_signature=signature)

    def call(self, episode: dict, training=None):
        steps = self.inner_steps if training else self.eval_inner_steps
        return self._adapt_episodes(episode, steps)[1]

    def train_gradients(self, episode: dict, global_batch_size: int,
                        scale_loss: Callable | None = None):
        """Query loss after adaptation and the Reptile outer "gradient" (see the class doc).

        Args:
            episode: This replica's episodes.
            global_batch_size: Episodes per step over all replicas.
            scale_loss: Optional `optimizer.scale_loss`; the gradients are multiplied by the
                same factor, which a loss-scaling optimizer divides out again.

        Returns:
            `(loss, gradients, predictions)`, gradients aligned with `self.trainable_variables`.
        """
        adapted, predictions = self._adapt_episodes(episode, self.inner_steps)
        scale = tf.constant(1.0 / global_batch_size)
        if scale_loss is not None:
            scale = scale_loss(scale)
        gradients = [
            keras.ops.sum(theta[None] - phi, axis=0) * keras.ops.cast(scale, theta.dtype)
            for theta, phi in zip(trainable_values(self.learner), adapted, strict=True)
        ]
        loss = tf.nn.compute_average_loss(self.episode_losses(episode, predictions),
                                          global_batch_size=global_batch_size)
        return loss, gradients, predictions

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "inner_batch_size": self.inner_batch_size,
            "seed": self.seed,
        }
