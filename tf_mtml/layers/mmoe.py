"""Multi-gate Mixture-of-Experts (MMoE)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
from keras import ops

from tf_mtml.layers._validation import (
    NUMERIC_FEATURES_FIX,
    check_input_dtype,
    check_positive_int,
    check_rate,
    check_task_names,
    check_units,
)
from tf_mtml.layers.gate_statistics import GateStatistics


def _stacked_initializer(
    initializer: keras.initializers.Initializer, num_stacked: int, stack_axis: int, index: int
) -> Callable:
    """Initializes `num_stacked` kernels of shape `(a, b)` stacked along `stack_axis`.

    Keras computes the fans of a 3-D shape `(n, a, b)` as if `n` were a convolution's
    receptive field (`n * a`, `n * b`), which would shrink Glorot/He/LeCun variances by `n`;
    scaling a variance-scaling initializer by `n` restores the fans of one `(a, b)` kernel.
    A Keras initializer returns the same random stream on every call, so each weight (`index`)
    gets its own copy: a fresh seed when unseeded, `seed + index` when seeded.
    """
    config = initializer.get_config()
    if "seed" in config:
        seed = config["seed"]
        config["seed"] = seed + index if isinstance(seed, int) else None
    if isinstance(initializer, keras.initializers.VarianceScaling):
        config.update(
            scale=initializer.scale * num_stacked,
            mode=initializer.mode,
            distribution=initializer.distribution,
        )
        initializer = keras.initializers.VarianceScaling.from_config(config)
    else:
        initializer = type(initializer).from_config(config)

    def initialize(shape, dtype=None):
        shape = list(shape)
        stacked_shape = [shape.pop(stack_axis), *shape]
        values = initializer(stacked_shape, dtype=dtype)
        return values if stack_axis == 0 else ops.moveaxis(values, 0, stack_axis)

    return initialize


@keras.saving.register_keras_serializable(package="tf_mtml")
class MMoE(keras.layers.Layer):
    """Multi-gate Mixture-of-Experts: one softmax gate per task over shared experts.

    Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
    Mixture-of-Experts", KDD 2018, https://dl.acm.org/doi/10.1145/3219819.3220007.
    Task `k` receives `f^k(x) = sum_i g^k(x)_i f_i(x)` with `g^k(x) = softmax(W_gk x + b_k)`
    and experts `f_i` that are MLPs of widths `expert_units`.

    All experts are computed together: the first layer is one
    `(batch, d) x (d, num_experts * units)` matmul, deeper layers one batched matmul over
    experts, and all gates one `(batch, d) x (d, num_tasks * num_experts)` matmul. Gate
    logits and softmax are computed in float32 (the gate weights are not autocast).

    Expert dropout (Zhao et al., "Recommending What Video to Watch Next", RecSys 2019,
    against gate polarisation): in training each expert is dropped per example with
    probability `expert_dropout`, with one mask shared by all tasks of that example; when
    every expert of an example would be dropped, one expert chosen uniformly at random is
    kept. The gates are renormalised over the kept experts, `g * m / sum(g * m)` (computed
    as a softmax over the kept experts' logits, so dropped experts get exactly 0). Expert
    dropout is not applied at inference.

    When `track_gate_statistics`, the layer owns a `GateStatistics` metric updated with the
    pre-dropout gates on every training call; Keras collects it into `model.metrics`, so
    `fit` logs contain `gate/{task}/expert{i}_weight` and `gate/{task}/entropy`.

    Args:
        num_experts: Number of experts.
        expert_units: Widths of every expert's layers (an int for one layer).
        num_tasks: Number of tasks (gates and outputs).
        expert_activation: Activation of every expert layer.
        expert_dropout: Probability of dropping an expert per example in training, `[0, 1)`.
        use_gate_bias: Whether the gates have a bias.
        track_gate_statistics: Whether to own and update a `GateStatistics` metric.
        kernel_initializer: Initializer of the expert and gate kernels, applied with the fans
            of a single expert's (gate's) kernel.
        task_names: Names of the tasks in the gate statistics keys (default `task{k}`).
        seed: Seed of the expert-dropout randomness.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        x: `(batch, d)`.
        training: Whether expert dropout is applied and gate statistics are updated.

    Returns:
        A list of `num_tasks` tensors of shape `(batch, expert_units[-1])`.

    Example:
        ```python
        mmoe = MMoE(num_experts=8, expert_units=(512, 256), num_tasks=4, expert_dropout=0.1)
        task_inputs = mmoe(x)  # 4 x (batch, 256)
        outputs = TaskTowers({"a": 1, "b": 1, "c": 1, "d": 3}, (64,))(task_inputs)
        ```
    """

    def __init__(
        self,
        num_experts: int,
        expert_units: tuple[int, ...] | int,
        num_tasks: int,
        expert_activation: str | None = "relu",
        expert_dropout: float = 0.0,
        use_gate_bias: bool = True,
        track_gate_statistics: bool = True,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        task_names: Sequence[str] | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = check_positive_int("num_experts", num_experts)
        self.expert_units = check_units("expert_units", expert_units, allow_empty=False)
        self.num_tasks = check_positive_int("num_tasks", num_tasks)
        self.expert_activation = keras.activations.get(expert_activation)
        self.expert_dropout = check_rate("expert_dropout", expert_dropout)
        self.use_gate_bias = bool(use_gate_bias)
        self.track_gate_statistics = bool(track_gate_statistics)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.task_names = check_task_names(task_names, num_tasks)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.expert_dropout else None
        self.gate_statistics = (
            GateStatistics(num_tasks, num_experts, self.task_names)
            if self.track_gate_statistics
            else None
        )

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                "MMoE expects inputs of shape `(batch, d)` with a known `d`. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        input_dim = input_shape[-1]
        # Later calls are checked against the built width (a clear error, not a matmul error).
        self.input_spec = keras.InputSpec(ndim=2, axes={-1: input_dim})
        num_experts = self.num_experts
        self.expert_kernels, self.expert_biases = [], []
        fan_in = input_dim
        for i, units in enumerate(self.expert_units):
            # Layer 0 is stored `(d, E, u)` so that it is one `(d, E * u)` matmul; deeper
            # layers are `(E, u, v)` for a batched matmul over experts.
            shape = (fan_in, num_experts, units) if i == 0 else (num_experts, fan_in, units)
            self.expert_kernels.append(
                self.add_weight(
                    shape=shape,
                    initializer=_stacked_initializer(
                        self.kernel_initializer, num_experts, 1 if i == 0 else 0, index=i
                    ),
                    name=f"expert_kernel_{i}",
                )
            )
            self.expert_biases.append(
                self.add_weight(
                    shape=(num_experts, units), initializer="zeros", name=f"expert_bias_{i}"
                )
            )
            fan_in = units
        # Not autocast: the gates are computed from float32 weights under mixed precision.
        self.gate_kernel = self.add_weight(
            shape=(input_dim, self.num_tasks, num_experts),
            initializer=_stacked_initializer(
                self.kernel_initializer, self.num_tasks, 1, index=len(self.expert_units)
            ),
            autocast=False,
            name="gate_kernel",
        )
        self.gate_bias = None
        if self.use_gate_bias:
            self.gate_bias = self.add_weight(
                shape=(self.num_tasks, num_experts),
                initializer="zeros",
                autocast=False,
                name="gate_bias",
            )

    def _gate_logits(self, x):
        """`(batch, num_tasks, num_experts)` float32 gate logits."""
        input_dim = self.gate_kernel.shape[0]
        width = self.num_tasks * self.num_experts
        logits = ops.matmul(
            ops.cast(x, "float32"), ops.reshape(self.gate_kernel, (input_dim, width))
        )
        if self.gate_bias is not None:
            logits = logits + ops.reshape(self.gate_bias, (width,))
        return ops.reshape(logits, (-1, self.num_tasks, self.num_experts))

    def gate_weights(self, x):
        """Returns the gates `(batch, num_tasks, num_experts)` in float32, without dropout."""
        return ops.softmax(self._gate_logits(x), axis=-1)

    def _expert_outputs(self, x):
        """`(batch, num_experts, expert_units[-1])`."""
        kernel, bias = self.expert_kernels[0], self.expert_biases[0]
        input_dim, num_experts, units = kernel.shape
        h = ops.matmul(x, ops.reshape(kernel, (input_dim, num_experts * units)))
        h = self.expert_activation(h + ops.reshape(bias, (num_experts * units,)))
        h = ops.reshape(h, (-1, num_experts, units))
        for kernel, bias in zip(self.expert_kernels[1:], self.expert_biases[1:], strict=True):
            h = self.expert_activation(ops.einsum("beu,euv->bev", h, kernel) + bias)
        return h

    def _expert_keep_mask(self, batch_size):
        """`(batch, num_experts)` bool mask of kept experts, at least one per row."""
        seed = self.seed_generator
        uniform = keras.random.uniform((batch_size, self.num_experts), seed=seed)
        keep = uniform >= self.expert_dropout
        fallback = keras.random.randint((batch_size,), 0, self.num_experts, seed=seed)
        fallback = ops.one_hot(fallback, self.num_experts, dtype="int32") > 0
        return ops.where(ops.any(keep, axis=-1, keepdims=True), keep, fallback)

    def call(self, x, training=None):
        check_input_dtype(self, "x", x, "numeric", NUMERIC_FEATURES_FIX)
        logits = self._gate_logits(x)
        gates = ops.softmax(logits, axis=-1)
        if training and self.gate_statistics is not None:
            self.gate_statistics.update_state(gates)
        if training and self.expert_dropout:
            keep = self._expert_keep_mask(ops.shape(x)[0])
            gates = ops.softmax(ops.where(keep[:, None, :], logits, float("-inf")), axis=-1)
        experts = self._expert_outputs(x)
        mixed = ops.einsum("bte,beu->btu", ops.cast(gates, experts.dtype), experts)
        return [mixed[:, k, :] for k in range(self.num_tasks)]

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], self.expert_units[-1])] * self.num_tasks

    def get_config(self):
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "expert_units": self.expert_units,
            "num_tasks": self.num_tasks,
            "expert_activation": keras.activations.serialize(self.expert_activation),
            "expert_dropout": self.expert_dropout,
            "use_gate_bias": self.use_gate_bias,
            "track_gate_statistics": self.track_gate_statistics,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "task_names": self.task_names,
            "seed": self.seed,
        }
