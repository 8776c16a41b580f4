"""Conditioning a hidden representation `h` on a task descriptor `z`.

All layers here take `[h, z]` with `h` of shape `(batch, ..., units)` and `z` of shape
`(batch, k)` (e.g. from `TaskDescriptor`); `z` is broadcast over the middle axes of `h`, so
`h` may be a vector per example or a feature map `(batch, height, width, channels)`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tf_mtml.layers._validation import check_choice, check_input_dtype, check_positive_int

_GATE_TYPES = ("soft", "hard")


def _check_shapes(layer: keras.layers.Layer, input_shape) -> tuple[tuple, tuple]:
    if (not isinstance(input_shape, list | tuple) or len(input_shape) != 2
            or not all(isinstance(shape, list | tuple) for shape in input_shape)):
        raise ValueError(
            f"{type(layer).__name__} expects a list `[h, z]` of two tensors. "
            f"Received: input_shape={input_shape}"
        )
    h_shape, z_shape = (tuple(s) for s in input_shape)
    if len(h_shape) < 2 or len(z_shape) != 2 or h_shape[-1] is None or z_shape[-1] is None:
        raise ValueError(
            f"{type(layer).__name__} expects `h` of shape `(batch, ..., units)` and `z` of "
            "shape `(batch, k)` with known last dimensions. "
            f"Received: h.shape={h_shape}, z.shape={z_shape}"
        )
    return h_shape, z_shape


def _expand_like(v, h):
    """Reshapes `v` of shape `(batch, k)` to `(batch, 1, ..., 1, k)` to broadcast against `h`."""
    for _ in range(len(h.shape) - 2):
        v = ops.expand_dims(v, 1)
    return v


class _Conditioning(keras.layers.Layer):
    """Base of the `[h, z]` layers: shape checks and dtype handling of `z`."""

    def build(self, input_shape):
        _check_shapes(self, input_shape)

    def _inputs(self, inputs):
        """`[h, z]` checked at every call: dtypes, and equal batch sizes when known."""
        h, z = inputs
        check_input_dtype(self, "h", h, "float", "Cast it, e.g. `ops.cast(h, 'float32')`.")
        check_input_dtype(self, "z", z, "numeric",
                          "Pass a task descriptor, e.g. `TaskDescriptor('one_hot', num_tasks)`.")
        if h.shape[0] is not None and z.shape[0] is not None and h.shape[0] != z.shape[0]:
            raise ValueError(
                f"{type(self).__name__} expects `h` and `z` with the same batch size (one task "
                f"descriptor per example). Received: h.shape={tuple(h.shape)}, "
                f"z.shape={tuple(z.shape)}"
            )
        return h, z

    def compute_output_shape(self, input_shape):
        return _check_shapes(self, input_shape)[0]


@keras.saving.register_keras_serializable(package="tf_mtml")
class ConcatConditioning(_Conditioning):
    """Concatenation conditioning: `concat([h, z], axis=-1)`.

    The simplest way to tell a shared network which task it serves; the next layer then
    learns a task-dependent bias.

    Call arguments:
        inputs: `[h, z]`, `h` of shape `(batch, ..., units)` and `z` of shape `(batch, k)`.

    Returns:
        `(batch, ..., units + k)`.

    Example:
        ```python
        hz = ConcatConditioning()([h, TaskDescriptor("one_hot", num_tasks=3)(task_ids)])
        ```
    """

    def call(self, inputs):
        h, z = self._inputs(inputs)
        z = _expand_like(ops.cast(z, h.dtype), h)
        z = ops.broadcast_to(z, (*ops.shape(h)[:-1], ops.shape(z)[-1]))
        return ops.concatenate([h, z], axis=-1)

    def compute_output_shape(self, input_shape):
        h_shape, z_shape = _check_shapes(self, input_shape)
        return (*h_shape[:-1], h_shape[-1] + z_shape[-1])


@keras.saving.register_keras_serializable(package="tf_mtml")
class AdditiveConditioning(_Conditioning):
    """Additive conditioning: `h + W z` (a task-dependent bias on `h`).

    Args:
        use_bias: Whether the projection of `z` has a bias; off by default because `h`
            usually comes from a layer that already has one.
        kernel_initializer: Initializer of `W`, shape `(k, units)`.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: `[h, z]`, `h` of shape `(batch, ..., units)` and `z` of shape `(batch, k)`.

    Returns:
        `(batch, ..., units)`.

    Example:
        ```python
        h = AdditiveConditioning()([h, z])
        ```
    """

    def __init__(
        self,
        use_bias: bool = False,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.projection = None

    def build(self, input_shape):
        h_shape, z_shape = _check_shapes(self, input_shape)
        self.projection = keras.layers.Dense(
            h_shape[-1],
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="projection",
        )
        self.projection.build(z_shape)

    def call(self, inputs):
        h, z = self._inputs(inputs)
        return h + _expand_like(self.projection(ops.cast(z, h.dtype)), h)

    def get_config(self):
        return {
            **super().get_config(),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@keras.saving.register_keras_serializable(package="tf_mtml")
class FiLM(_Conditioning):
    """Feature-wise linear modulation: `gamma(z) * h + beta(z)`.

    Perez et al. 2018, "FiLM: Visual Reasoning with a General Conditioning Layer",
    https://arxiv.org/abs/1709.07871. `gamma(z) = 1 + W_g z + b_g` and `beta(z) = W_b z + b_b`
    with all four weights initialised to zero, so the layer is exactly the identity at
    initialisation and a pretrained network is not disturbed when FiLM is inserted.

    Args:
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: `[h, z]`, `h` of shape `(batch, ..., units)` and `z` of shape `(batch, k)`.

    Returns:
        `(batch, ..., units)`.

    Example:
        ```python
        h = FiLM()([conv_features, z])  # (batch, height, width, channels)
        ```
    """

    def build(self, input_shape):
        h_shape, z_shape = _check_shapes(self, input_shape)
        self.gamma = keras.layers.Dense(
            h_shape[-1], kernel_initializer="zeros", dtype=self.dtype_policy, name="gamma"
        )
        self.beta = keras.layers.Dense(
            h_shape[-1], kernel_initializer="zeros", dtype=self.dtype_policy, name="beta"
        )
        self.gamma.build(z_shape)
        self.beta.build(z_shape)

    def call(self, inputs):
        h, z = self._inputs(inputs)
        z = ops.cast(z, h.dtype)
        gamma = 1.0 + _expand_like(self.gamma(z), h)
        return gamma * h + _expand_like(self.beta(z), h)


@keras.saving.register_keras_serializable(package="tf_mtml")
class MultiplicativeGating(_Conditioning):
    """Per-task unit masks: `h * m(z)`.

    - `gate_type="soft"`: `m(z) = sigmoid(W z + b)`, a learned soft mask (the sigmoid is
      computed in float32).
    - `gate_type="hard"`: the `units` of `h` are split among `num_tasks` tasks in contiguous
      blocks (unit `j` belongs to task `j * num_tasks // units`) and `m(z) = z @ M` with the
      fixed binary assignment matrix `M` of shape `(num_tasks, units)`. With a one-hot `z`,
      a stack of `Dense` + hard gating layers is exactly a set of independent per-task
      sub-networks sharing one set of kernels: a task's output and gradients never depend on
      the weights feeding another task's units. A soft `z` mixes the task masks.

    Args:
        gate_type: `"soft"` or `"hard"`.
        num_tasks: Number of tasks; required for `"hard"` (and then `z` must have
            `num_tasks` columns and `h` at least `num_tasks` units), must be `None` for
            `"soft"`.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: `[h, z]`, `h` of shape `(batch, ..., units)` and `z` of shape `(batch, k)`.

    Returns:
        `(batch, ..., units)`.

    Example:
        ```python
        z = TaskDescriptor("one_hot", num_tasks=2)(task_ids)
        h = MultiplicativeGating("hard", num_tasks=2)([Dense(64)(x), z])
        ```
    """

    def __init__(self, gate_type: str = "soft", num_tasks: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.gate_type = check_choice("gate_type", gate_type, _GATE_TYPES)
        if gate_type == "hard":
            check_positive_int("num_tasks", num_tasks)
        elif num_tasks is not None:
            raise ValueError(
                "Received an invalid value for `num_tasks`, expected None with "
                "gate_type='soft' (the mask is learned); use gate_type='hard' for a fixed "
                f"partition of the units among tasks. Received: num_tasks={num_tasks!r}"
            )
        self.num_tasks = num_tasks
        self.gate = None
        self.assignment = None

    def build(self, input_shape):
        h_shape, z_shape = _check_shapes(self, input_shape)
        units = h_shape[-1]
        if self.gate_type == "soft":
            self.gate = keras.layers.Dense(units, dtype=self.dtype_policy, name="gate")
            self.gate.build(z_shape)
            return
        if z_shape[-1] != self.num_tasks or units < self.num_tasks:
            raise ValueError(
                f"MultiplicativeGating(gate_type='hard', num_tasks={self.num_tasks}) expects "
                f"`z` with {self.num_tasks} columns (a task one-hot) and `h` with at least "
                f"{self.num_tasks} units. Received: h.shape={h_shape}, z.shape={z_shape}"
            )
        owner = np.arange(units) * self.num_tasks // units
        self.assignment = (owner[None, :] == np.arange(self.num_tasks)[:, None]).astype("float32")

    def call(self, inputs):
        h, z = self._inputs(inputs)
        z = ops.cast(z, h.dtype)
        if self.gate_type == "soft":
            mask = ops.sigmoid(ops.cast(self.gate(z), "float32"))
        else:
            mask = ops.matmul(z, ops.convert_to_tensor(self.assignment, dtype=h.dtype))
        return h * _expand_like(ops.cast(mask, h.dtype), h)

    def get_config(self):
        return {**super().get_config(), "gate_type": self.gate_type, "num_tasks": self.num_tasks}
