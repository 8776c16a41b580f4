"""The non-finite guard: a step whose gradients are not finite is never applied.

`build_guarded_optimizer` returns a Keras optimizer whose `apply` checks the gradients of the
whole step (summed over replicas, so every replica takes the same decision) and applies them
only when they are all finite; otherwise it records the step in a `NonFiniteGuard` and leaves
the weights and the optimizer state (moments, iterations) untouched. The Trainer reads the
guard between compiled loops and, by `trainer.nan_policy`, stops (`stop`: the loop breaks at
the bad step, nothing after it is checkpointed) or logs and goes on (`skip`).

The distributed branch follows `keras.optimizers.LossScaleOptimizer`: the conditional apply
runs in cross-replica context because a `cond` whose branch calls `merge_call` cannot run in
replica context. Unlike that optimizer, the finiteness decision is all-reduced first, so a NaN
on one replica skips the step on all of them.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_mtml.configs.experiment import NAN_POLICIES


class NonFiniteGuard(tf.Module):
    """Counts the steps whose gradients were not finite, and the last such step.

    Create it in the strategy's scope. Its variables are not checkpointed: they describe the
    current training loop and are reset between loops.

    Args:
        policy: `"stop"` or `"skip"` (see the module docstring).
        global_step: The trainer's step variable, incremented after each step; the step being
            run is `global_step + 1`.
    """

    def __init__(self, policy: str, global_step: tf.Variable):
        super().__init__(name="nonfinite_guard")
        if policy not in NAN_POLICIES:
            raise ValueError(
                f"Received an invalid value for `policy`, expected one of {NAN_POLICIES}. "
                f"Received: policy={policy!r}"
            )
        self.policy = policy
        self._global_step = global_step
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.bad_steps = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=first,
                                     name="bad_steps")
        self.last_bad_step = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                         aggregation=first, name="last_bad_step")

    def record(self) -> None:
        """Notes that the step being run had non-finite gradients (called in-graph)."""
        self.bad_steps.assign_add(1)
        self.last_bad_step.assign(self._global_step + 1)

    def should_stop(self) -> tf.Tensor:
        """True once a bad step was seen under the `stop` policy (the loop breaks on it)."""
        return tf.logical_and(tf.constant(self.policy == "stop"), self.bad_steps > 0)

    def reset(self) -> None:
        self.bad_steps.assign(0)
        self.last_bad_step.assign(-1)


def _num_non_finite(grads) -> tf.Tensor:
    counts = []
    for g in grads:
        if g is None:
            continue
        values = g.values if isinstance(g, tf.IndexedSlices) else g
        counts.append(tf.reduce_sum(tf.cast(tf.logical_not(tf.math.is_finite(values)),
                                            tf.int32)))
    return tf.add_n(counts) if counts else tf.constant(0)


class _SkipNonFinite:
    """Mixed in before a Keras optimizer class: `apply` skips non-finite steps."""

    def apply(self, grads, trainable_variables=None):
        self.apply_if_finite(grads, trainable_variables)

    def apply_if_finite(self, grads, trainable_variables=None, loss=None):
        """Applies `grads` unless they, or `loss`, hold a non-finite value on any replica."""
        grads = list(grads)
        checked = grads if loss is None else [*grads, loss]
        guard = self._nonfinite_guard
        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            bad = _num_non_finite(checked)
            if tf.distribute.has_strategy():
                bad = tf.distribute.get_replica_context().all_reduce("sum", bad)
            tf.cond(bad == 0, lambda: self._apply_finite(grads, trainable_variables),
                    lambda: self._skip(guard))
            return

        def cross_replica(distribution, grads, checked, trainable_variables):
            bad_per_replica = distribution.extended.call_for_each_replica(
                _num_non_finite, args=(checked,))
            bad = distribution.reduce(tf.distribute.ReduceOp.SUM, bad_per_replica, axis=None)

            def apply_fn():
                distribution.extended.call_for_each_replica(
                    self._apply_finite, args=(grads, trainable_variables))

            tf.cond(bad == 0, apply_fn, lambda: self._skip(guard))

        tf.distribute.get_replica_context().merge_call(
            cross_replica, args=(grads, checked, trainable_variables))

    def _apply_finite(self, grads, trainable_variables) -> None:
        super().apply(grads, trainable_variables)

    @staticmethod
    def _skip(guard: NonFiniteGuard) -> None:
        guard.record()


def apply_gradients(optimizer, grads_and_vars, loss=None) -> None:
    """`optimizer.apply_gradients`, skipping the step when `loss` or a gradient is non-finite.

    What every task's train step calls. A loss can overflow to inf while its gradients stay
    finite (and huge); checking the loss too keeps such a step from reaching the weights. An
    optimizer not built by `build_guarded_optimizer` (a `LossScaleOptimizer`, which skips
    non-finite gradients itself, or a user's) is called as is.

    Args:
        optimizer: The step's optimizer.
        grads_and_vars: `(gradient, variable)` pairs.
        loss: This replica's loss (any shape), or None to check the gradients only.
    """
    grads_and_vars = list(grads_and_vars)
    if not isinstance(optimizer, _SkipNonFinite):
        optimizer.apply_gradients(grads_and_vars)
        return
    grads, variables = zip(*grads_and_vars, strict=True) if grads_and_vars else ((), ())
    optimizer.apply_if_finite(list(grads), list(variables), loss)


def build_guarded_optimizer(optimizer_class: type, guard: NonFiniteGuard, **kwargs):
    """An instance of `optimizer_class(**kwargs)` whose `apply` skips non-finite steps.

    The returned object is an instance of a subclass of `optimizer_class` (same name, same
    variables and checkpoint layout), so it can be used wherever that optimizer can.

    Args:
        optimizer_class: A `keras.optimizers.Optimizer` subclass, e.g. `keras.optimizers.Adam`.
        guard: Where skipped steps are recorded.
        **kwargs: The optimizer's arguments.

    Returns:
        The optimizer.
    """
    if not (isinstance(optimizer_class, type)
            and issubclass(optimizer_class, keras.optimizers.Optimizer)):
        raise ValueError(
            "Received an invalid value for `optimizer_class`, expected a subclass of "
            f"keras.optimizers.Optimizer. Received: optimizer_class={optimizer_class!r}"
        )
    guarded = type(optimizer_class.__name__, (_SkipNonFinite, optimizer_class), {})
    optimizer = guarded(**kwargs)
    # Bypasses Keras' attribute tracking: the guard is not part of the optimizer's checkpoint.
    object.__setattr__(optimizer, "_nonfinite_guard", guard)
    return optimizer
