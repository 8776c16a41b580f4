"""Task descriptors: turn a task id or task metadata into a vector `z` to condition on."""

from __future__ import annotations

import keras
from keras import ops

from tf_mtml.layers._validation import check_choice, check_input_dtype, check_positive_int

_MODES = ("one_hot", "embedding", "metadata")


@keras.saving.register_keras_serializable(package="tf_mtml")
class TaskDescriptor(keras.layers.Layer):
    """Maps task ids (or task metadata) to a task descriptor vector `z`.

    Three modes:

    - `"one_hot"`: integer task ids -> one-hot vectors of length `num_tasks`.
    - `"embedding"`: integer task ids -> learned vectors of length `embedding_dim`
      (a `(num_tasks, embedding_dim)` table).
    - `"metadata"`: a float metadata vector per example -> itself, or its linear projection to
      `embedding_dim` when `embedding_dim` is given.

    Out-of-range task ids (negative or `>= num_tasks`) cannot be rejected cheaply inside a
    compiled graph, so they are defined to map to the all-zeros vector, in both `"one_hot"`
    and `"embedding"` mode and on every device (the embedding is computed as
    `one_hot(ids) @ table`, not as a gather, whose out-of-range behaviour differs between
    CPU and GPU). A conditioning layer then sees "no task" rather than a wrong task.

    Args:
        mode: One of `"one_hot"`, `"embedding"`, `"metadata"`.
        num_tasks: Number of tasks; required for `"one_hot"` and `"embedding"`, must be
            `None` for `"metadata"`.
        embedding_dim: Output width; required for `"embedding"`, optional for `"metadata"`
            (no projection when `None`), must be `None` for `"one_hot"`.
        embeddings_initializer: Initializer of the embedding table (`"embedding"` mode).
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Call arguments:
        inputs: Integer task ids of shape `(batch,)` or `(batch, 1)` in `"one_hot"` and
            `"embedding"` mode; float metadata of shape `(batch, m)` in `"metadata"` mode.

    Returns:
        `(batch, num_tasks)` in `"one_hot"` mode, `(batch, embedding_dim)` in `"embedding"`
        mode, `(batch, embedding_dim or m)` in `"metadata"` mode, in the layer's compute dtype.

    Example:
        ```python
        z = TaskDescriptor("one_hot", num_tasks=3)(np.array([0, 2, 5]))
        # [[1, 0, 0], [0, 0, 1], [0, 0, 0]]  (id 5 is out of range)
        ```
    """

    def __init__(
        self,
        mode: str = "one_hot",
        num_tasks: int | None = None,
        embedding_dim: int | None = None,
        embeddings_initializer: str | keras.initializers.Initializer = "uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.mode = check_choice("mode", mode, _MODES)
        if mode == "metadata":
            if num_tasks is not None:
                raise ValueError(
                    "Received an invalid value for `num_tasks`, expected None in "
                    "mode='metadata' (the metadata vector describes the task). "
                    f"Received: num_tasks={num_tasks!r}"
                )
        else:
            check_positive_int("num_tasks", num_tasks)
        if mode == "one_hot" and embedding_dim is not None:
            raise ValueError(
                "Received an invalid value for `embedding_dim`, expected None in "
                "mode='one_hot' (the output width is `num_tasks`); use mode='embedding' for "
                f"a learned vector. Received: embedding_dim={embedding_dim!r}"
            )
        if mode == "embedding" or embedding_dim is not None:
            check_positive_int("embedding_dim", embedding_dim)
        self.num_tasks = num_tasks
        self.embedding_dim = embedding_dim
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.projection = None
        if mode == "metadata" and embedding_dim is not None:
            self.projection = keras.layers.Dense(
                embedding_dim, dtype=self.dtype_policy, name="projection"
            )

    def _check_ids_shape(self, input_shape):
        if len(input_shape) not in (1, 2) or (len(input_shape) == 2 and input_shape[1] != 1):
            raise ValueError(
                f"TaskDescriptor(mode={self.mode!r}) expects task ids of shape `(batch,)` or "
                f"`(batch, 1)`. Received: input_shape={tuple(input_shape)}"
            )

    def build(self, input_shape):
        if self.mode == "metadata":
            if len(input_shape) != 2 or input_shape[-1] is None:
                raise ValueError(
                    "TaskDescriptor(mode='metadata') expects metadata of shape `(batch, m)` "
                    f"with a known `m`. Received: input_shape={tuple(input_shape)}"
                )
            if self.projection is not None:
                self.projection.build(input_shape)
            return
        self._check_ids_shape(input_shape)
        if self.mode == "embedding":
            self.embeddings = self.add_weight(
                shape=(self.num_tasks, self.embedding_dim),
                initializer=self.embeddings_initializer,
                name="embeddings",
            )

    def call(self, inputs):
        if self.mode == "metadata":
            check_input_dtype(self, "inputs", inputs, "numeric",
                              "Pass the task metadata as numbers `(batch, m)`.")
            z = ops.cast(inputs, self.compute_dtype)
            return z if self.projection is None else self.projection(z)
        # A float id would be truncated silently (1.7 -> task 1): only integer ids are taken.
        check_input_dtype(self, "inputs", inputs, "integer",
                          "Pass integer task ids in [0, num_tasks), e.g. `ids.astype('int32')` "
                          "after rounding; a `keras.Input` of ids needs `dtype='int32'`.")
        ids = ops.cast(ops.reshape(inputs, (-1,)), "int32")
        one_hot = ops.one_hot(ids, self.num_tasks, dtype=self.compute_dtype)
        if self.mode == "one_hot":
            return one_hot
        return ops.matmul(one_hot, self.embeddings)

    def compute_output_shape(self, input_shape):
        if self.mode == "metadata":
            return (input_shape[0], self.embedding_dim or input_shape[-1])
        self._check_ids_shape(input_shape)
        width = self.num_tasks if self.mode == "one_hot" else self.embedding_dim
        return (input_shape[0], width)

    def get_config(self):
        return {
            **super().get_config(),
            "mode": self.mode,
            "num_tasks": self.num_tasks,
            "embedding_dim": self.embedding_dim,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }
