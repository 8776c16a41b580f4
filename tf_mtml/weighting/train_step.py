"""One training step of a `MultiTaskModel` under any weighting, exact under `tf.distribute`.

Loss-level weightings (static, uncertainty, DWA, RLW) differentiate the weighted total.
GradNorm does too, and replaces the gradient of its weights by its own. Gradient-level
methods (PCGrad, CAGrad, MGDA) differentiate every task's loss separately. Per-task
gradients are summed over the replicas before any nonlinear use (a combination, a norm,
a cosine), so every replica computes the single-device value; the combined gradient is
then divided by the number of replicas because the optimizer sums gradients over replicas
once more.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from tf_mtml.layers.mmoe import MMoE
from tf_mtml.train.nonfinite import apply_gradients
from tf_mtml.weighting.diagnostics import pairwise_cosine
from tf_mtml.weighting.gradient_methods import GradientWeighting
from tf_mtml.weighting.gradnorm import GradNorm


def _num_replicas() -> int:
    ctx = tf.distribute.get_replica_context()
    return 1 if ctx is None else ctx.num_replicas_in_sync


def all_reduce_sum(values: list) -> list[tf.Tensor]:
    """Sums each tensor over the replicas (dense); the identity outside a distributed step."""
    values = [tf.convert_to_tensor(v) for v in values]
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1 or not values:
        return values
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, values)


def task_partitioned_variables(model: keras.Model) -> list:
    """Variables that hold one slice per task, so they are task-specific, not shared.

    Every task's loss reaches such a variable, but only through its own slice. A layer
    declares them as `task_partitioned_weights` (CGC / PLE gates, soft-sharing and
    cross-stitch columns); `MMoE` keeps every gate in one kernel and bias.
    """
    found = []
    for layer in model._flatten_layers(include_self=False):
        if hasattr(layer, "task_partitioned_weights"):
            found += list(layer.task_partitioned_weights)
        elif isinstance(layer, MMoE):
            found += [v for v in (layer.gate_kernel, layer.gate_bias) if v is not None]
    return found


def shared_variable_indices(task_gradients: list[list], variables: list,
                            task_partitioned: list = ()) -> list[int]:
    """Indices of the variables that two or more tasks' losses reach (the shared ones),
    leaving out `task_partitioned` variables."""
    return [v for v, variable in enumerate(variables)
            if sum(g[v] is not None for g in task_gradients) >= 2
            and not any(variable is p for p in task_partitioned)]


def _index_of(variables: list, target) -> int:
    return next(i for i, v in enumerate(variables) if v is target)


_NOT_SHARED = ("receives gradients from two or more tasks other than task-partitioned "
               "weights (gates; soft-sharing and cross-stitch columns), which are task-specific")


def _gradnorm_kernel_index(variables: list, shared: list[int]) -> int:
    """GradNorm's `W`: the last shared kernel (rank >= 2) in the model's variable order."""
    kernels = [v for v in shared if len(variables[v].shape) >= 2]
    if not kernels:
        raise ValueError(
            f"GradNorm needs a shared layer, but no trainable kernel (rank >= 2) {_NOT_SHARED}. "
            "Use a network with shared layers (experts, a shared bottom) or another weighting.")
    return kernels[-1]


def _check_shared(shared: list[int], who: str, remedy: str) -> None:
    if not shared:
        raise ValueError(
            f"{who} needs shared parameters, but no trainable variable {_NOT_SHARED}. Use a "
            f"network with shared layers (experts, a shared bottom) or {remedy}.")


class _TaskGradients:
    """Every task's gradients, summed over replicas on the variables a step needs."""

    def __init__(self, tape, objectives: list, variables: list, model: keras.Model,
                 all_connected: bool):
        grads = [tape.gradient(o, variables) for o in objectives]
        self.shared = shared_variable_indices(grads, variables, task_partitioned_variables(model))
        self.connected = [v for v in range(len(variables)) if any(g[v] is not None for g in grads)]
        wanted = self.connected if all_connected else self.shared
        keys = [(k, v) for k in range(len(grads)) for v in wanted if grads[k][v] is not None]
        self.reduced = dict(zip(keys, all_reduce_sum([grads[k][v] for k, v in keys]),
                                strict=True))
        self.num_tasks = len(grads)

    def on_shared(self) -> list[list[tf.Tensor]]:
        """Tasks x shared variables."""
        return [[self.reduced[k, v] for v in self.shared] for k in range(self.num_tasks)]

    def combined(self, weighting: GradientWeighting, step) -> dict[int, tf.Tensor]:
        """`{variable index: gradient}`: the method's combination on the shared variables,
        the sum of the tasks' gradients (each its own task's) on the others."""
        grads = dict(zip(self.shared, weighting.combine(self.on_shared(), step=step),
                         strict=True))
        for v in self.connected:
            if v not in grads:
                grads[v] = tf.add_n([self.reduced[k, v] for k in range(self.num_tasks)
                                     if (k, v) in self.reduced])
        return grads


def _gradient_method_gradients(weighting: GradientWeighting, task_grads: _TaskGradients,
                               regularization_grads: list | None, num_variables: int, step,
                               replicas: int) -> list:
    """The method's combination on the shared variables, each task's own gradient elsewhere,
    plus this replica's regularisation gradient."""
    _check_shared(task_grads.shared, f"The gradient method '{weighting.method}'",
                  "a loss-level weighting")
    combined = task_grads.combined(weighting, step)
    # The optimizer sums over replicas again: hand it each replica's equal share.
    grads = [combined[v] / replicas if v in combined else None for v in range(num_variables)]
    if regularization_grads is None:
        return grads
    return [r if g is None else g if r is None else g + r
            for g, r in zip(grads, regularization_grads, strict=True)]


def _gradnorm_weight_gradient(weighting: GradNorm, task_grads: _TaskGradients, variables: list,
                              global_losses, optimizer, replicas: int):
    """GradNorm's gradient for its weights, from the task gradient norms on its `W`."""
    kernel = _gradnorm_kernel_index(variables, task_grads.shared)
    norms = ops.stack([tf.norm(task_grads.reduced[k, kernel])
                       for k in range(task_grads.num_tasks)])
    weight_grad = weighting.weight_gradient(norms / optimizer.scale_loss(1.0), global_losses)
    return optimizer.scale_loss(weight_grad) / replicas


def multitask_train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, x, y):
    """Computes and applies one step's gradients of `model` (a `MultiTaskModel`).

    Also updates `model.gradient_diagnostics` (a `GradientDiagnostics`, when the model has
    one) and advances the state of a weighting with `update_weights` (DWA, RLW, GradNorm).
    Per-task gradients are `tape.gradient` calls on one persistent tape (measured faster
    than `tape.jacobian` on the synthetic MMoE). Every task objective is the task's loss
    times its prior weight (the weighting's `task_weights`, else the `TaskSpec` weight).

    Args:
        model: The multi-task model; `model.weighting` selects the method.
        optimizer: Built on `model.trainable_variables`.
        x: This replica's inputs.
        y: This replica's labels `{task: labels}`.

    Returns:
        `(loss, y_pred)`: this replica's share of the weighted total loss, and the raw
        outputs.
    """
    weighting = model.weighting
    diagnostics = getattr(model, "gradient_diagnostics", None)
    gradient_level = isinstance(weighting, GradientWeighting)
    per_task = gradient_level or isinstance(weighting, GradNorm) or diagnostics is not None
    stateful = hasattr(weighting, "update_weights")
    priors = getattr(weighting, "task_weights", None) or {t.name: t.weight for t in model.tasks}
    variables = list(model.trainable_variables)
    replicas = _num_replicas()
    with tf.GradientTape(persistent=per_task) as tape:
        y_pred = model(x, training=True)
        loss = model.compute_loss(x, y, y_pred, training=True)
        scaled_loss = optimizer.scale_loss(loss)
        if per_task or stateful:
            by_task = model.task_losses(y, y_pred)
            objectives = [optimizer.scale_loss(priors[n] * by_task[n]) for n in model.task_names]
        if gradient_level and model.losses:
            regularization = optimizer.scale_loss(ops.sum(ops.stack(model.losses)) / replicas)
    global_losses = None
    if per_task or stateful:
        global_losses = all_reduce_sum([ops.stack([by_task[n] for n in model.task_names])])[0]
    if per_task:
        task_grads = _TaskGradients(tape, objectives, variables, model, gradient_level)
    if gradient_level:
        regularization_grads = tape.gradient(regularization, variables) if model.losses else None
        grads = _gradient_method_gradients(weighting, task_grads, regularization_grads,
                                           len(variables), optimizer.iterations, replicas)
    else:
        grads = tape.gradient(scaled_loss, variables)
    if isinstance(weighting, GradNorm):
        grads[_index_of(variables, weighting.loss_weights)] = _gradnorm_weight_gradient(
            weighting, task_grads, variables, global_losses, optimizer, replicas)
    if diagnostics is not None:
        _check_shared(task_grads.shared, "Gradient diagnostics",
                      "set `task.model.gradient_diagnostics=false`")
        diagnostics.update_state(pairwise_cosine(task_grads.on_shared()), global_losses)
    apply_gradients(optimizer, zip(grads, variables, strict=True), loss)
    if stateful:
        _update_weights_if_finite(weighting, global_losses)
    return loss, y_pred


def _update_weights_if_finite(weighting, global_losses) -> None:
    """`weighting.update_weights`, undone when a task loss is not finite.

    The optimizer skips such a step (`tf_mtml.train.nonfinite`); the weighting's state (DWA's
    loss history, GradNorm's initial losses, RLW's draw counter) must skip it too, or one NaN
    would poison every later weight. Assigning the old values back avoids a `cond`, which
    cannot hold cross-replica variable updates in replica context.
    """
    finite = ops.all(ops.isfinite(global_losses))
    before = [tf.identity(v.value) for v in weighting.variables]  # copies, not aliases
    weighting.update_weights(global_losses)
    for variable, old in zip(weighting.variables, before, strict=True):
        variable.assign(ops.where(finite, variable.value, old))
