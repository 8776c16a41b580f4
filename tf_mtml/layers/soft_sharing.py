"""Soft parameter sharing: task-specific MLP columns pulled together by an L2 penalty."""

from __future__ import annotations

import keras
from keras import ops

from tf_mtml.layers._validation import check_positive_int, check_units
from tf_mtml.layers.mmoe import _stacked_initializer


def _check_l2(l2) -> float:
    if isinstance(l2, bool) or not isinstance(l2, int | float) or not 0 <= l2 < float("inf"):
        raise ValueError(
            "Received an invalid value for `l2`, expected a finite float >= 0 (0 gives "
            f"independent columns). Received: l2={l2!r}"
        )
    return float(l2)


def pairwise_squared_distance(stacked):
    """`sum_{i<j} ||w_i - w_j||^2` over the slices `w_i = stacked[i]`, in float32.

    Computed as the equal `T * sum_i ||w_i - mean_i w_i||^2`, which does not cancel
    catastrophically when the slices are close.
    """
    stacked = ops.cast(stacked, "float32")
    deviation = stacked - ops.mean(stacked, axis=0, keepdims=True)
    return stacked.shape[0] * ops.sum(ops.square(deviation))


@keras.saving.register_keras_serializable(package="tf_mtml")
class PairwiseL2(keras.regularizers.Regularizer):
    """Regularizer `l2 * sum_{i<j} ||w_i - w_j||^2` of a weight stacking copies `w_i = w[i]`.

    Args:
        l2: Strength, `>= 0`.

    Example:
        ```python
        kernel = layer.add_weight(shape=(num_tasks, d, units), regularizer=PairwiseL2(1e-3))
        ```
    """

    def __init__(self, l2: float):
        self.l2 = _check_l2(l2)

    def __call__(self, x):
        return self.l2 * pairwise_squared_distance(x)

    def get_config(self):
        return {"l2": self.l2}


@keras.saving.register_keras_serializable(package="tf_mtml")
class SoftSharing(keras.layers.Layer):
    """One MLP column per task, with an L2 penalty between the columns' parameters.

    Duong et al., "Low Resource Dependency Parsing: Cross-lingual Parameter Sharing in a
    Neural Network Parser", ACL 2015, https://aclanthology.org/P15-2139; the "soft parameter
    sharing" of Ruder's overview, https://arxiv.org/abs/1706.05098. Every task has its own copy
    `theta_k` of the same MLP (widths `units`, all copies reading the shared input), and the
    layer's losses hold `l2 * sum_{i<j} ||theta_i - theta_j||^2`, so `MultiTaskModel`'s loss
    and Keras `fit` include it.

    The columns' kernels and biases are stored stacked `(num_tasks, ...)`, so one batched
    matmul runs every column and the penalty is a `PairwiseL2` weight regularizer on each
    stacked weight (their sum is the penalty over whole columns). A regularizer rather than
    `add_loss` in `call`: it is computed from the variables whenever `losses` is read, in
    each replica, whereas a loss added in `call` lives on the layer object that the replicas
    of a `tf.distribute` step share. The penalty is computed from the float32 weights, also
    under mixed precision. `l2=0` gives independent single-task columns, with no sharing at
    all. The copies are initialised independently (each with the fans of one column).

    Args:
        num_tasks: Number of tasks (columns).
        units: Widths of every column's layers (an int for one layer).
        l2: Strength of the penalty, `>= 0`.
        activation: Activation of every column layer.
        kernel_initializer: Initializer of the column kernels.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        x: `(batch, d)`, read by every column.

    Returns:
        A list of `num_tasks` tensors of shape `(batch, units[-1])`.

    Example:
        ```python
        columns = SoftSharing(num_tasks=2, units=(64,), l2=1e-3)
        outputs = TaskTowers({"pos": 17, "parse": 40}, (32,))(columns(x))
        model.losses  # [l2 * penalty of each stacked weight]
        ```
    """

    def __init__(
        self,
        num_tasks: int,
        units: tuple[int, ...] | int,
        l2: float = 1e-3,
        activation: str | None = "relu",
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_tasks = check_positive_int("num_tasks", num_tasks)
        self.units = check_units("units", units, allow_empty=False)
        self.l2 = _check_l2(l2)
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                "SoftSharing expects inputs of shape `(batch, d)` with a known `d`. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        regularizer = PairwiseL2(self.l2) if self.l2 else None
        self.kernels, self.biases = [], []
        fan_in = input_shape[-1]
        for i, units in enumerate(self.units):
            # Not autocast: the penalty reads the float32 values, and `call` casts the
            # weights to the compute dtype itself.
            self.kernels.append(
                self.add_weight(
                    shape=(self.num_tasks, fan_in, units),
                    initializer=_stacked_initializer(
                        self.kernel_initializer, self.num_tasks, 0, index=i
                    ),
                    regularizer=regularizer,
                    autocast=False,
                    name=f"kernel_{i}",
                )
            )
            self.biases.append(
                self.add_weight(
                    shape=(self.num_tasks, units),
                    initializer="zeros",
                    regularizer=regularizer,
                    autocast=False,
                    name=f"bias_{i}",
                )
            )
            fan_in = units

    @property
    def task_partitioned_weights(self) -> list:
        """Every weight: slice `k` is task `k`'s column, which only task `k`'s output reads.

        Every task's loss reaches these variables, but the tasks share no parameter, so
        gradient-level weighting methods must not treat them as shared.
        """
        return [*self.kernels, *self.biases]

    def penalty(self):
        """`sum_{i<j} ||theta_i - theta_j||^2` over all column parameters, float32 scalar."""
        return sum(pairwise_squared_distance(w) for w in (*self.kernels, *self.biases))

    def call(self, x):
        h = ops.einsum("bd,tdu->btu", x, ops.cast(self.kernels[0], self.compute_dtype))
        h = self.activation(h + ops.cast(self.biases[0], self.compute_dtype))
        for kernel, bias in zip(self.kernels[1:], self.biases[1:], strict=True):
            h = ops.einsum("btd,tdu->btu", h, ops.cast(kernel, self.compute_dtype))
            h = self.activation(h + ops.cast(bias, self.compute_dtype))
        return [h[:, k, :] for k in range(self.num_tasks)]

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], self.units[-1])] * self.num_tasks

    def get_config(self):
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "units": self.units,
            "l2": self.l2,
            "activation": keras.activations.serialize(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
