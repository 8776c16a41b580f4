"""Customized Gate Control (CGC) and Progressive Layered Extraction (PLE)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from tf_mtml.layers._validation import (
    check_positive_int,
    check_rate,
    check_task_names,
    check_units,
)
from tf_mtml.layers.gate_statistics import GateStatistics
from tf_mtml.layers.mmoe import _stacked_initializer

SHARED = "shared"


@keras.saving.register_keras_serializable(package="tf_mtml")
class CGC(keras.layers.Layer):
    """Customized Gate Control: task-specific and shared experts, one gate per task.

    Tang et al., "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning (MTL)
    Model for Personalized Recommendations", RecSys 2020,
    https://dl.acm.org/doi/10.1145/3383313.3412236. Every task `k` owns `num_task_experts`
    experts and all tasks share `num_shared_experts`; task `k`'s gate is a softmax over its own
    experts followed by the shared ones, `g^k(q^k) = softmax(W_k q^k + b_k)`, and its output is
    `sum_i g^k_i e_i` over those experts. With `shared_output`, a shared gate over all experts
    (input `q^s`) also produces the shared representation that the next PLE level reads.

    Experts are numbered task 0's first, then task 1's, ..., then the shared ones; the task
    and the shared experts are stored as two stacks of weights and computed as in `MMoE` (one
    matmul per input, a batched matmul over experts for deeper layers, float32 gates). Expert
    dropout is MMoE's: in training each expert is dropped per example with probability
    `expert_dropout`, one mask per example shared by every gate; a gate renormalises over its
    kept experts, and when all of a gate's experts would be dropped it keeps one of them
    chosen uniformly at random.

    With `track_gate_statistics` the layer owns `GateStatistics` of the pre-dropout task gates
    (keys `gate/{prefix}{task}/expert{i}_weight`, experts `0..num_task_experts - 1` the task's
    own, then the shared ones) and, with `shared_output`, of the shared gate
    (`gate/{prefix}shared/expert{i}_weight`, experts in the stacked order above).

    Args:
        num_tasks: Number of tasks.
        num_task_experts: Experts owned by each task.
        num_shared_experts: Experts shared by all tasks.
        expert_units: Widths of every expert's layers (an int for one layer).
        expert_activation: Activation of every expert layer.
        expert_dropout: Probability of dropping an expert per example in training, `[0, 1)`.
        shared_output: Whether to add the shared gate and output (every PLE level but the last).
        use_gate_bias: Whether the gates have a bias.
        track_gate_statistics: Whether to own and update `GateStatistics` metrics.
        kernel_initializer: Initializer of the expert and gate kernels, applied with the fans
            of a single expert's (gate's) kernel.
        task_names: Names of the tasks in the gate statistics keys (default `task{k}`).
        statistics_prefix: Prefix of the gate names in the statistics keys, e.g. `"level0/"`.
        seed: Seed of the expert-dropout randomness.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: `(batch, d)` read by every expert and gate, or a list of `num_tasks + 1`
            tensors `(batch, d)`: task `k`'s experts and gate read `inputs[k]`, the shared
            experts and gate read `inputs[-1]` (the outputs of a CGC with `shared_output`).
        training: Whether expert dropout is applied and gate statistics are updated.

    Returns:
        A list of `num_tasks` tensors `(batch, expert_units[-1])`, followed by the shared
        representation when `shared_output`.

    Example:
        ```python
        cgc = CGC(num_tasks=2, num_task_experts=2, num_shared_experts=2, expert_units=(32,))
        outputs = TaskTowers({"ctr": 1, "cvr": 1}, (16,))(cgc(x))
        ```
    """

    def __init__(
        self,
        num_tasks: int,
        num_task_experts: int,
        num_shared_experts: int,
        expert_units: tuple[int, ...] | int,
        expert_activation: str | None = "relu",
        expert_dropout: float = 0.0,
        shared_output: bool = False,
        use_gate_bias: bool = True,
        track_gate_statistics: bool = True,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        task_names: Sequence[str] | None = None,
        statistics_prefix: str = "",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_tasks = check_positive_int("num_tasks", num_tasks)
        self.num_task_experts = check_positive_int("num_task_experts", num_task_experts)
        self.num_shared_experts = check_positive_int("num_shared_experts", num_shared_experts)
        self.expert_units = check_units("expert_units", expert_units, allow_empty=False)
        self.expert_activation = keras.activations.get(expert_activation)
        self.expert_dropout = check_rate("expert_dropout", expert_dropout)
        self.shared_output = bool(shared_output)
        self.use_gate_bias = bool(use_gate_bias)
        self.track_gate_statistics = bool(track_gate_statistics)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.task_names = check_task_names(task_names, num_tasks)
        if not isinstance(statistics_prefix, str):
            raise ValueError(
                "Received an invalid value for `statistics_prefix`, expected a string. "
                f"Received: statistics_prefix={statistics_prefix!r}"
            )
        self.statistics_prefix = statistics_prefix
        gate_names = self.task_names or tuple(f"task{k}" for k in range(num_tasks))
        if self.shared_output and SHARED in gate_names:
            raise ValueError(
                f"Received an invalid value for `task_names`, expected no task named '{SHARED}' "
                f"when `shared_output=True` (the shared gate has that name in the statistics). "
                f"Received: task_names={task_names!r}"
            )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.expert_dropout else None
        # Static expert indices of each task gate: its own experts, then the shared ones.
        self.num_experts = num_tasks * num_task_experts + num_shared_experts
        shared = list(range(num_tasks * num_task_experts, self.num_experts))
        self.task_expert_indices = [
            list(range(k * num_task_experts, (k + 1) * num_task_experts)) + shared
            for k in range(num_tasks)
        ]
        self.gate_statistics = self.shared_gate_statistics = None
        if self.track_gate_statistics:
            self.gate_statistics = GateStatistics(
                num_tasks,
                num_task_experts + num_shared_experts,
                [statistics_prefix + name for name in gate_names],
                name="gate_statistics",
            )
            if self.shared_output:
                self.shared_gate_statistics = GateStatistics(
                    1, self.num_experts, [statistics_prefix + SHARED],
                    name="shared_gate_statistics",
                )

    def _input_dim(self, input_shape) -> int:
        shapes = [input_shape] if _is_shape(input_shape) else list(input_shape)
        dims = {tuple(s)[-1] for s in shapes if _is_shape(s) and len(s) == 2}
        if len(shapes) not in (1, self.num_tasks + 1) or len(dims) != 1 or None in dims:
            raise ValueError(
                "CGC expects one tensor `(batch, d)` or a list of num_tasks + 1 = "
                f"{self.num_tasks + 1} tensors `(batch, d)` with one known `d`. "
                f"Received: input_shape={input_shape}"
            )
        return dims.pop()

    def _add_experts(self, group: str, count: int, input_dim: int, first_index: int):
        """Stacked kernels and biases of `count` experts, as in `MMoE`."""
        kernels, biases = [], []
        fan_in = input_dim
        for i, units in enumerate(self.expert_units):
            # Layer 0 is `(d, n, u)`, one `(d, n * u)` matmul; deeper layers are `(n, u, v)`.
            shape = (fan_in, count, units) if i == 0 else (count, fan_in, units)
            initializer = _stacked_initializer(
                self.kernel_initializer, count, 1 if i == 0 else 0, index=first_index + i
            )
            kernels.append(
                self.add_weight(shape=shape, initializer=initializer, name=f"{group}_kernel_{i}")
            )
            biases.append(
                self.add_weight(shape=(count, units), initializer="zeros", name=f"{group}_bias_{i}")
            )
            fan_in = units
        return kernels, biases

    def build(self, input_shape):
        input_dim = self._input_dim(input_shape)
        num_layers = len(self.expert_units)
        # Task and shared experts are separate weights: gradient-level weighting methods see
        # which parameters the tasks share.
        self.task_expert_kernels, self.task_expert_biases = self._add_experts(
            "task_expert", self.num_tasks * self.num_task_experts, input_dim, 0
        )
        self.shared_expert_kernels, self.shared_expert_biases = self._add_experts(
            "shared_expert", self.num_shared_experts, input_dim, num_layers
        )
        gate_width = self.num_task_experts + self.num_shared_experts
        index = 2 * num_layers
        # Not autocast: the gates are computed from float32 weights under mixed precision.
        self.gate_kernel = self.add_weight(
            shape=(input_dim, self.num_tasks, gate_width),
            initializer=_stacked_initializer(self.kernel_initializer, self.num_tasks, 1, index),
            autocast=False,
            name="gate_kernel",
        )
        self.gate_bias = self._gate_bias((self.num_tasks, gate_width), "gate_bias")
        self.shared_gate_kernel = self.shared_gate_bias = None
        if self.shared_output:
            self.shared_gate_kernel = self.add_weight(
                shape=(input_dim, self.num_experts),
                initializer=_stacked_initializer(self.kernel_initializer, 1, 0, index + 1),
                autocast=False,
                name="shared_gate_kernel",
            )
            self.shared_gate_bias = self._gate_bias((self.num_experts,), "shared_gate_bias")

    @property
    def task_partitioned_weights(self) -> list:
        """Weights whose slice `k` only task `k`'s output of this layer reads.

        The task gates, and the task experts when no shared gate mixes them. They hold
        per-task parameters although every task's loss reaches the variable, so gradient-level
        weighting methods must not treat them as shared.
        """
        weights = [w for w in (self.gate_kernel, self.gate_bias) if w is not None]
        if not self.shared_output:
            weights += [*self.task_expert_kernels, *self.task_expert_biases]
        return weights

    def _gate_bias(self, shape, name):
        if not self.use_gate_bias:
            return None
        return self.add_weight(shape=shape, initializer="zeros", autocast=False, name=name)

    def _split_inputs(self, inputs):
        """`(task_inputs, shared_input)`; `task_inputs` is None for one shared input."""
        if isinstance(inputs, list | tuple):
            return list(inputs[:-1]), inputs[-1]
        return None, inputs

    def _gate_logits(self, task_inputs, shared_input):
        """Task gate logits `(batch, num_tasks, gate_width)` and shared ones `(batch, E)`."""
        input_dim, num_tasks, width = self.gate_kernel.shape
        if task_inputs is None:
            logits = ops.matmul(
                ops.cast(shared_input, "float32"),
                ops.reshape(self.gate_kernel, (input_dim, num_tasks * width)),
            )
            logits = ops.reshape(logits, (-1, num_tasks, width))
        else:
            stacked = ops.cast(ops.stack(task_inputs, axis=1), "float32")
            logits = ops.einsum("btd,dte->bte", stacked, self.gate_kernel)
        if self.gate_bias is not None:
            logits = logits + self.gate_bias
        shared_logits = None
        if self.shared_output:
            shared_logits = ops.matmul(ops.cast(shared_input, "float32"), self.shared_gate_kernel)
            if self.shared_gate_bias is not None:
                shared_logits = shared_logits + self.shared_gate_bias
        return logits, shared_logits

    def gate_weights(self, inputs):
        """The task gates `(batch, num_tasks, gate_width)` in float32, without dropout."""
        return ops.softmax(self._gate_logits(*self._split_inputs(inputs))[0], axis=-1)

    def shared_gate_weights(self, inputs):
        """The shared gate `(batch, num_experts)` in float32, without dropout."""
        if not self.shared_output:
            raise ValueError("This CGC has no shared gate; build it with `shared_output=True`.")
        return ops.softmax(self._gate_logits(*self._split_inputs(inputs))[1], axis=-1)

    def _run_experts(self, first, kernels, biases):
        """`(batch, n, expert_units[-1])` from the first layer's `(batch, n, u)` matmul."""
        h = self.expert_activation(first + biases[0])
        for kernel, bias in zip(kernels[1:], biases[1:], strict=True):
            h = self.expert_activation(ops.einsum("beu,euv->bev", h, kernel) + bias)
        return h

    def _expert_outputs(self, task_inputs, shared_input):
        """`(batch, num_experts, expert_units[-1])`; task `k`'s experts read its own input."""
        kernel = self.task_expert_kernels[0]
        input_dim, _, units = kernel.shape
        if task_inputs is None:
            first = _matmul_experts(shared_input, kernel)
        else:
            per_task = ops.reshape(kernel, (input_dim, self.num_tasks, -1, units))
            first = ops.einsum("btd,dtmu->btmu", ops.stack(task_inputs, axis=1), per_task)
            first = ops.reshape(first, (-1, self.num_tasks * self.num_task_experts, units))
        task_experts = self._run_experts(first, self.task_expert_kernels, self.task_expert_biases)
        shared_experts = self._run_experts(
            _matmul_experts(shared_input, self.shared_expert_kernels[0]),
            self.shared_expert_kernels,
            self.shared_expert_biases,
        )
        return ops.concatenate([task_experts, shared_experts], axis=1)

    def _keep_at_least_one(self, keep):
        """Keeps one uniformly random expert in the rows of `keep` where none is kept."""
        fallback = keras.random.randint(
            ops.shape(keep)[:-1], 0, keep.shape[-1], seed=self.seed_generator
        )
        fallback = ops.one_hot(fallback, keep.shape[-1], dtype="int32") > 0
        return ops.where(ops.any(keep, axis=-1, keepdims=True), keep, fallback)

    def _drop_experts(self, logits, shared_logits, batch_size):
        """Masks the dropped experts' logits with -inf, one mask per example for all gates."""
        uniform = keras.random.uniform((batch_size, self.num_experts), seed=self.seed_generator)
        keep = uniform >= self.expert_dropout
        task_keep = self._keep_at_least_one(ops.take(keep, self.task_expert_indices, axis=1))
        logits = ops.where(task_keep, logits, float("-inf"))
        if shared_logits is not None:
            shared_logits = ops.where(self._keep_at_least_one(keep), shared_logits, float("-inf"))
        return logits, shared_logits

    def call(self, inputs, training=None):
        task_inputs, shared_input = self._split_inputs(inputs)
        logits, shared_logits = self._gate_logits(task_inputs, shared_input)
        if training and self.gate_statistics is not None:
            self.gate_statistics.update_state(ops.softmax(logits, axis=-1))
            if shared_logits is not None:
                self.shared_gate_statistics.update_state(ops.softmax(shared_logits)[:, None, :])
        if training and self.expert_dropout:
            logits, shared_logits = self._drop_experts(
                logits, shared_logits, ops.shape(shared_input)[0]
            )
        experts = self._expert_outputs(task_inputs, shared_input)
        task_experts = ops.take(experts, self.task_expert_indices, axis=1)  # (b, T, width, u)
        gates = ops.cast(ops.softmax(logits, axis=-1), experts.dtype)
        mixed = ops.einsum("bte,bteu->btu", gates, task_experts)
        outputs = [mixed[:, k, :] for k in range(self.num_tasks)]
        if shared_logits is not None:
            shared_gates = ops.cast(ops.softmax(shared_logits, axis=-1), experts.dtype)
            outputs.append(ops.einsum("be,beu->bu", shared_gates, experts))
        return outputs

    def compute_output_shape(self, input_shape):
        batch = (input_shape if _is_shape(input_shape) else input_shape[0])[0]
        return [(batch, self.expert_units[-1])] * (self.num_tasks + int(self.shared_output))

    def get_config(self):
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "num_task_experts": self.num_task_experts,
            "num_shared_experts": self.num_shared_experts,
            "expert_units": self.expert_units,
            "expert_activation": keras.activations.serialize(self.expert_activation),
            "expert_dropout": self.expert_dropout,
            "shared_output": self.shared_output,
            "use_gate_bias": self.use_gate_bias,
            "track_gate_statistics": self.track_gate_statistics,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "task_names": self.task_names,
            "statistics_prefix": self.statistics_prefix,
            "seed": self.seed,
        }


def _is_shape(shape) -> bool:
    return all(d is None or isinstance(d, int) for d in shape)


def _matmul_experts(x, kernel):
    """`(batch, d) x (d, n, u) -> (batch, n, u)` as one matmul."""
    input_dim, num_experts, units = kernel.shape
    h = ops.matmul(x, ops.reshape(kernel, (input_dim, num_experts * units)))
    return ops.reshape(h, (-1, num_experts, units))


def _offset_seed(
    initializer: keras.initializers.Initializer, offset: int
) -> keras.initializers.Initializer:
    """A seeded initializer's copy with `seed + offset`, so that levels start differently."""
    config = initializer.get_config()
    if not isinstance(config.get("seed"), int):
        return initializer
    config["seed"] += offset
    return type(initializer).from_config(config)


@keras.saving.register_keras_serializable(package="tf_mtml")
class PLE(keras.layers.Layer):
    """Progressive Layered Extraction: stacked CGC levels with a shared path between them.

    Tang et al., RecSys 2020, https://dl.acm.org/doi/10.1145/3383313.3412236, sec. 4.2.
    Level `j` is a `CGC` whose task-`k` experts and gate read task `k`'s output of level
    `j - 1` and whose shared experts read the shared output of level `j - 1` (level 0 reads
    the input everywhere). Every level but the last also has a shared gate over all of its
    experts, which produces that shared output; the last level returns one representation per
    task. `num_levels=1` is a single `CGC`.

    Gate statistics (when tracked) are prefixed with the level:
    `gate/level{j}/{task}/expert{i}_weight` and `gate/level{j}/shared/expert{i}_weight`.

    Args:
        num_tasks: Number of tasks.
        num_levels: Number of extraction levels.
        num_task_experts: Experts owned by each task at each level.
        num_shared_experts: Shared experts at each level.
        expert_units: Widths of every expert's layers (an int for one layer), at every level.
        expert_activation: Activation of every expert layer.
        expert_dropout: Probability of dropping an expert per example in training, `[0, 1)`.
        use_gate_bias: Whether the gates have a bias.
        track_gate_statistics: Whether the levels own and update `GateStatistics` metrics.
        kernel_initializer: Initializer of the expert and gate kernels; a seeded one is
            offset per level so that the levels do not start from the same weights.
        task_names: Names of the tasks in the gate statistics keys (default `task{k}`).
        seed: Seed of the expert-dropout randomness (level `j` uses `seed + j`).
        **kwargs: Base layer keyword arguments.

    Call arguments:
        x: `(batch, d)`.
        training: Whether expert dropout is applied and gate statistics are updated.

    Returns:
        A list of `num_tasks` tensors of shape `(batch, expert_units[-1])`.

    Example:
        ```python
        ple = PLE(num_tasks=2, num_levels=2, num_task_experts=1, num_shared_experts=2,
                  expert_units=(64,), expert_dropout=0.1)
        outputs = TaskTowers({"ctr": 1, "watch": 1}, (32,))(ple(x))
        ```
    """

    def __init__(
        self,
        num_tasks: int,
        num_levels: int,
        num_task_experts: int,
        num_shared_experts: int,
        expert_units: tuple[int, ...] | int,
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
        self.num_levels = check_positive_int("num_levels", num_levels)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.seed = seed
        # Each CGC seeds its weights `seed + index` with indices below this stride.
        stride = 2 * len(check_units("expert_units", expert_units, allow_empty=False)) + 2
        self.levels = [
            CGC(
                num_tasks,
                num_task_experts,
                num_shared_experts,
                expert_units,
                expert_activation=expert_activation,
                expert_dropout=expert_dropout,
                shared_output=j < num_levels - 1,
                use_gate_bias=use_gate_bias,
                track_gate_statistics=track_gate_statistics,
                kernel_initializer=_offset_seed(self.kernel_initializer, j * stride),
                task_names=task_names,
                statistics_prefix=f"level{j}/",
                seed=None if seed is None else seed + j,
                dtype=self.dtype_policy,
                name=f"level{j}",
            )
            for j in range(num_levels)
        ]

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                "PLE expects inputs of shape `(batch, d)` with a known `d`. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        shape = tuple(input_shape)
        for level in self.levels:
            level.build(shape)
            shape = level.compute_output_shape(shape)

    def call(self, x, training=None):
        h = x
        for level in self.levels:
            h = level(h, training=training)
        return h

    def compute_output_shape(self, input_shape):
        return self.levels[-1].compute_output_shape(input_shape)

    def get_config(self):
        level = self.levels[0]
        return {
            **super().get_config(),
            "num_tasks": level.num_tasks,
            "num_levels": self.num_levels,
            "num_task_experts": level.num_task_experts,
            "num_shared_experts": level.num_shared_experts,
            "expert_units": level.expert_units,
            "expert_activation": keras.activations.serialize(level.expert_activation),
            "expert_dropout": level.expert_dropout,
            "use_gate_bias": level.use_gate_bias,
            "track_gate_statistics": level.track_gate_statistics,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "task_names": level.task_names,
            "seed": self.seed,
        }
