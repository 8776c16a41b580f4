"""Per-task towers and output heads, and the shared-trunk multi-head network."""

from __future__ import annotations

from collections.abc import Mapping

import keras

from tf_mtml.layers._validation import (
    NUMERIC_FEATURES_FIX,
    check_input_dtype,
    check_rate,
    check_task_output_units,
    check_units,
)
from tf_mtml.layers.mlp import MLP


def _is_shape(shape) -> bool:
    return all(d is None or isinstance(d, int) for d in shape)


@keras.saving.register_keras_serializable(package="tf_mtml")
class TaskTowers(keras.layers.Layer):
    """One MLP tower and one linear output layer per task.

    The output layers have no activation (they produce logits or raw regression values;
    the losses apply sigmoid/softmax) and always compute in float32, so the outputs are
    float32 under mixed precision and losses stay numerically safe.

    Args:
        task_output_units: `{task_name: output width}`, in the order of the towers.
        tower_units: Hidden widths of every tower; `()` puts the output layer directly on the
            input.
        activation: Activation of the tower layers.
        dropout: Dropout rate after every tower layer, in `[0, 1)`.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: One shared tensor `(batch, d)`, or a list of per-task tensors `(batch, d_k)`
            ordered like `task_output_units` (e.g. the outputs of `MMoE`).
        training: Whether dropout is active.

    Returns:
        `{task_name: (batch, task_output_units[task_name])}`, float32.

    Example:
        ```python
        outputs = TaskTowers({"ctr": 1, "rating": 5}, tower_units=(64,))(MMoE(...)(x))
        ```
    """

    def __init__(
        self,
        task_output_units: Mapping[str, int],
        tower_units: tuple[int, ...] = (),
        activation: str | None = "relu",
        dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.task_output_units = check_task_output_units(task_output_units)
        self.tower_units = check_units("tower_units", tower_units)
        self.activation = keras.activations.get(activation)
        self.dropout = check_rate("dropout", dropout)
        self.towers = [
            MLP(
                self.tower_units,
                activation=self.activation,
                dropout=self.dropout,
                dtype=self.dtype_policy,
                name=f"{task}_tower",
            )
            for task in self.task_output_units
        ]
        # The heads compute in float32 whatever the layer's policy: logits for the losses.
        self.heads = [
            keras.layers.Dense(units, dtype="float32", name=f"{task}_head")
            for task, units in self.task_output_units.items()
        ]

    def _per_task_shapes(self, input_shape) -> list[tuple]:
        num_tasks = len(self.task_output_units)
        if _is_shape(input_shape):
            shapes = [tuple(input_shape)] * num_tasks
        else:
            shapes = [tuple(s) for s in input_shape]
        if len(shapes) != num_tasks or not all(_is_shape(s) and len(s) >= 2 for s in shapes):
            raise ValueError(
                f"TaskTowers expects one tensor `(batch, d)` or a list of {num_tasks} tensors "
                f"(one per task of {list(self.task_output_units)}). "
                f"Received: input_shape={input_shape}"
            )
        return shapes

    def build(self, input_shape):
        for shape, tower, head in zip(
            self._per_task_shapes(input_shape), self.towers, self.heads, strict=True
        ):
            tower.build(shape)
            head.build(tower.compute_output_shape(shape))

    def call(self, inputs, training=None):
        if not isinstance(inputs, list | tuple):
            inputs = [inputs] * len(self.towers)
        for x in inputs:
            check_input_dtype(self, "inputs", x, "numeric", NUMERIC_FEATURES_FIX)
        return {
            task: head(tower(x, training=training))
            for task, x, tower, head in zip(
                self.task_output_units, inputs, self.towers, self.heads, strict=True
            )
        }

    def compute_output_shape(self, input_shape):
        return {
            task: (*shape[:-1], units)
            for (task, units), shape in zip(
                self.task_output_units.items(), self._per_task_shapes(input_shape), strict=True
            )
        }

    def compute_output_spec(self, inputs, training=None):
        shapes = self.compute_output_shape(keras.tree.map_structure(lambda t: t.shape, inputs))
        return {task: keras.KerasTensor(shape, dtype="float32") for task, shape in shapes.items()}

    def get_config(self):
        return {
            **super().get_config(),
            "task_output_units": self.task_output_units,
            "tower_units": self.tower_units,
            "activation": keras.activations.serialize(self.activation),
            "dropout": self.dropout,
        }


@keras.saving.register_keras_serializable(package="tf_mtml")
class MultiHead(keras.layers.Layer):
    """Hard parameter sharing: a shared trunk MLP followed by per-task towers and heads.

    Args:
        task_output_units: `{task_name: output width}`.
        trunk_units: Hidden widths of the shared trunk.
        tower_units: Hidden widths of every task tower.
        activation: Activation of the trunk and tower layers.
        dropout: Dropout rate after every trunk and tower layer, in `[0, 1)`.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: `(batch, d)`.
        training: Whether dropout is active.

    Returns:
        `{task_name: (batch, task_output_units[task_name])}`, float32.

    Example:
        ```python
        outputs = MultiHead({"income": 1, "marital": 1}, trunk_units=(128,))(x)
        ```
    """

    def __init__(
        self,
        task_output_units: Mapping[str, int],
        trunk_units: tuple[int, ...],
        tower_units: tuple[int, ...] = (),
        activation: str | None = "relu",
        dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.trunk = MLP(
            check_units("trunk_units", trunk_units),
            activation=activation,
            dropout=dropout,
            dtype=self.dtype_policy,
            name="trunk",
        )
        self.towers = TaskTowers(
            task_output_units,
            tower_units=tower_units,
            activation=activation,
            dropout=dropout,
            dtype=self.dtype_policy,
            name="towers",
        )

    def build(self, input_shape):
        self.trunk.build(input_shape)
        self.towers.build(self.trunk.compute_output_shape(input_shape))

    def call(self, inputs, training=None):
        check_input_dtype(self, "inputs", inputs, "numeric", NUMERIC_FEATURES_FIX)
        return self.towers(self.trunk(inputs, training=training), training=training)

    def compute_output_shape(self, input_shape):
        return self.towers.compute_output_shape(self.trunk.compute_output_shape(input_shape))

    def compute_output_spec(self, inputs, training=None):
        return self.towers.compute_output_spec(
            keras.KerasTensor(self.trunk.compute_output_shape(inputs.shape))
        )

    def get_config(self):
        return {
            **super().get_config(),
            "task_output_units": self.towers.task_output_units,
            "trunk_units": self.trunk.units,
            "tower_units": self.towers.tower_units,
            "activation": keras.activations.serialize(self.towers.activation),
            "dropout": self.towers.dropout,
        }
