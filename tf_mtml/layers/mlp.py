"""A plain multi-layer perceptron: the trunks, bottoms and towers of multi-task models."""

from __future__ import annotations

import keras

from tf_mtml.layers._validation import check_rate, check_units


@keras.saving.register_keras_serializable(package="tf_mtml")
class MLP(keras.layers.Layer):
    """A stack of `Dense(units[i], activation)` layers, each followed by dropout.

    Args:
        units: Widths of the hidden layers; `()` makes the layer the identity.
        activation: Activation of every layer.
        dropout: Dropout rate after every layer, in `[0, 1)`; `0` adds no dropout layers.
        kernel_initializer: Initializer of the kernels.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: `(batch, ..., d)`.
        training: Whether dropout is active.

    Returns:
        `(batch, ..., units[-1])`, or the input unchanged when `units` is empty.

    Example:
        ```python
        h = MLP((256, 128), dropout=0.1)(x, training=True)
        ```
    """

    def __init__(
        self,
        units: tuple[int, ...] | int = (),
        activation: str | None = "relu",
        dropout: float = 0.0,
        kernel_initializer: str | keras.initializers.Initializer = "glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check_units("units", units)
        self.activation = keras.activations.get(activation)
        self.dropout = check_rate("dropout", dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.dense_layers = [
            keras.layers.Dense(
                width,
                activation=self.activation,
                kernel_initializer=self.kernel_initializer,
                dtype=self.dtype_policy,
                name=f"dense_{i}",
            )
            for i, width in enumerate(self.units)
        ]
        self.dropout_layers = [
            keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name=f"dropout_{i}")
            for i in range(len(self.units) if self.dropout else 0)
        ]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for dense in self.dense_layers:
            dense.build(shape)
            shape = dense.compute_output_shape(shape)

    def call(self, inputs, training=None):
        h = inputs
        for i, dense in enumerate(self.dense_layers):
            h = dense(h)
            if self.dropout_layers:
                h = self.dropout_layers[i](h, training=training)
        return h

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units[-1]) if self.units else tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": keras.activations.serialize(self.activation),
            "dropout": self.dropout,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
