"""Cross-stitch units and the per-task columns they connect (Misra et al. 2016)."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tf_mtml.layers._validation import check_positive_int, check_units
from tf_mtml.layers.mmoe import _stacked_initializer


def _check_num_tasks(num_tasks) -> int:
    if check_positive_int("num_tasks", num_tasks) < 2:
        raise ValueError(
            "Received an invalid value for `num_tasks`, expected an integer >= 2 (a "
            "cross-stitch unit mixes the columns of several tasks; for one task use a plain "
            f"MLP). Received: num_tasks={num_tasks!r}"
        )
    return num_tasks


def _check_alpha_same(alpha_same) -> float:
    if isinstance(alpha_same, bool) or not isinstance(alpha_same, int | float) or not (
        0 <= alpha_same <= 1
    ):
        raise ValueError(
            "Received an invalid value for `alpha_same`, expected a float in [0, 1] (the "
            f"initial weight of a task's own column). Received: alpha_same={alpha_same!r}"
        )
    return float(alpha_same)


@keras.saving.register_keras_serializable(package="tf_mtml")
class CrossStitch(keras.layers.Layer):
    """A cross-stitch unit: each task's activations become a learned mix of all tasks'.

    Misra et al., "Cross-stitch Networks for Multi-task Learning", CVPR 2016,
    https://arxiv.org/abs/1604.03539. With `T` tasks and activations `x_j` of the same shape,
    task `i` receives `x~_i = sum_j alpha_ij x_j`. `alpha` starts as a convex combination that
    favours the task's own column: `alpha_same` on the diagonal and
    `(1 - alpha_same) / (T - 1)` elsewhere (the paper's `(alpha_S, alpha_D) = (0.9, 0.1)` for
    two tasks); `alpha_same=1` starts from independent columns.

    Args:
        num_tasks: Number of tasks (columns), at least 2.
        alpha_same: Initial weight of a task's own column, in `[0, 1]`.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: A list of `num_tasks` tensors of one shape `(batch, ...)`.

    Returns:
        A list of `num_tasks` tensors of that shape.

    Example:
        ```python
        stitch = CrossStitch(num_tasks=2, alpha_same=0.9)
        h_a, h_b = stitch([dense_a(x), dense_b(x)])
        ```
    """

    def __init__(self, num_tasks: int, alpha_same: float = 0.9, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = _check_num_tasks(num_tasks)
        self.alpha_same = _check_alpha_same(alpha_same)

    def initial_alpha(self) -> np.ndarray:
        """The initial `(num_tasks, num_tasks)` mixing matrix (rows sum to 1)."""
        off = (1.0 - self.alpha_same) / (self.num_tasks - 1)
        alpha = np.full((self.num_tasks, self.num_tasks), off)
        np.fill_diagonal(alpha, self.alpha_same)
        return alpha

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape] if isinstance(input_shape, list) else []
        if len(shapes) != self.num_tasks or len(set(shapes)) != 1:
            raise ValueError(
                f"CrossStitch expects a list of num_tasks={self.num_tasks} tensors of one shape. "
                f"Received: input_shape={input_shape}"
            )
        self.alpha = self.add_weight(
            shape=(self.num_tasks, self.num_tasks),
            initializer=lambda shape, dtype=None: ops.cast(self.initial_alpha(), dtype),
            name="alpha",
        )

    @property
    def task_partitioned_weights(self) -> list:
        """`alpha`: its row `k` only task `k`'s output reads."""
        return [self.alpha]

    def call(self, inputs):
        # (T, T) x (T, batch, ...) -> (T, batch, ...): row i is task i's mix.
        mixed = ops.tensordot(self.alpha, ops.stack(inputs, axis=0), axes=1)
        return [mixed[i] for i in range(self.num_tasks)]

    def compute_output_shape(self, input_shape):
        return [tuple(s) for s in input_shape]

    def get_config(self):
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "alpha_same": self.alpha_same,
        }


@keras.saving.register_keras_serializable(package="tf_mtml")
class CrossStitchNetwork(keras.layers.Layer):
    """One MLP column per task, with a cross-stitch unit after every layer.

    Misra et al. 2016 (https://arxiv.org/abs/1604.03539) put a cross-stitch unit between
    corresponding layers of task-specific networks; here each column is an MLP of widths
    `units` on the shared input, and its outputs go to the task towers. The columns' kernels
    are stored stacked `(num_tasks, fan_in, units)` and initialised with the fans of one
    column's kernel.

    Args:
        num_tasks: Number of tasks (columns), at least 2.
        units: Widths of every column's layers (an int for one layer).
        alpha_same: Initial weight of a task's own column in every unit, in `[0, 1]`.
        activation: Activation of every column layer (applied before the unit).
        kernel_initializer: Initializer of the column kernels.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        x: `(batch, d)`, read by every column.

    Returns:
        A list of `num_tasks` tensors of shape `(batch, units[-1])`.

    Example:
        ```python
        network = CrossStitchNetwork(num_tasks=2, units=(64, 32), alpha_same=0.9)
        outputs = TaskTowers({"segmentation": 3, "depth": 1}, (16,))(network(x))
        ```
    """

    def __init__(
        self,
        num_tasks: int,
        units: tuple[int, ...] | int,
        alpha_same: float = 0.9,
        activation: str | None = "relu",
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_tasks = _check_num_tasks(num_tasks)
        self.units = check_units("units", units, allow_empty=False)
        self.alpha_same = _check_alpha_same(alpha_same)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.stitches = [
            CrossStitch(num_tasks, alpha_same, dtype=self.dtype_policy, name=f"cross_stitch_{i}")
            for i in range(len(self.units))
        ]

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                "CrossStitchNetwork expects inputs of shape `(batch, d)` with a known `d`. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.kernels, self.biases = [], []
        fan_in = input_shape[-1]
        for i, units in enumerate(self.units):
            self.kernels.append(
                self.add_weight(
                    shape=(self.num_tasks, fan_in, units),
                    initializer=_stacked_initializer(
                        self.kernel_initializer, self.num_tasks, 0, index=i
                    ),
                    name=f"kernel_{i}",
                )
            )
            self.biases.append(
                self.add_weight(
                    shape=(self.num_tasks, units), initializer="zeros", name=f"bias_{i}"
                )
            )
            self.stitches[i].build([(input_shape[0], units)] * self.num_tasks)
            fan_in = units

    def call(self, x):
        columns = [x] * self.num_tasks
        for kernel, bias, stitch in zip(self.kernels, self.biases, self.stitches, strict=True):
            columns = [
                self.activation(ops.matmul(h, kernel[k]) + bias[k]) for k, h in enumerate(columns)
            ]
            columns = stitch(columns)
        return columns

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], self.units[-1])] * self.num_tasks

    def get_config(self):
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "units": self.units,
            "alpha_same": self.alpha_same,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
