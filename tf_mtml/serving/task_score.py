"""The `task_score` signature of multi-task models: each row scored by the task it names.

`serving_default` of a multi-task model returns every task's prediction for every row. A client
that needs one objective per row (a different task for each candidate, e.g. the click model for
some and the rating model for others) sends `task_id` beside the model's inputs and reads one
`score` per row, plus the `task_name` the id stands for, so that a client with a stale id table
sees the mismatch. Ids follow the order of the experiment's `task.tasks`; ids outside
`[0, num_tasks)` are rejected in the graph with a message listing the ids.

Only tasks with one value per example (binary, regression) can share a `score` column, so models
with a multiclass task export no `task_score`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from tf_mtml.models.task_spec import TaskSpec
from tf_mtml.serving.validation import gate, id_range_check, same_rows_check

TASK_SCORE = "task_score"
TASK_ID = "task_id"


def supports_task_score(tasks: Sequence[TaskSpec]) -> bool:
    """Whether every task predicts one value per example (no multiclass task)."""
    return all(task.type != "multiclass" for task in tasks)


def task_score_endpoint(
    predict: Callable[[dict], dict],
    input_signature: Mapping[str, tf.TensorSpec],
    tasks: Sequence[TaskSpec],
) -> dict:
    """`{"task_score": (fn, signature)}` for `export_saved_model`'s `extra_endpoints`.

    Args:
        predict: The serving function, `{input: tensor} -> {task name: (batch,) prediction}`.
        input_signature: The inputs of `predict`; the endpoint adds `task_id` `(None,)` int32.
        tasks: The task specs, in id order.

    Returns:
        The endpoint dict, returning `{"score": (batch,) float32, "task_name": (batch,)
        string}`; empty when a task is multiclass (`supports_task_score`).

    Example:

    ```python
    extra = task_score_endpoint(model.serve, {"features": spec}, model.tasks)
    export_saved_model(model, base, input_signature={"features": spec}, extra_endpoints=extra)
    ```
    """
    if TASK_ID in input_signature:
        raise ValueError(
            f"Received a model input named {TASK_ID!r}, which `task_score` adds itself. Rename "
            f"the model input. Received inputs: {sorted(input_signature)}"
        )
    if not supports_task_score(tasks):
        return {}
    names = [task.name for task in tasks]
    what = "task ids (" + ", ".join(f"{i}={name}" for i, name in enumerate(names)) + ")"

    def score(inputs: dict) -> dict:
        inputs = gate(inputs, [
            same_rows_check(TASK_SCORE, inputs, [*input_signature, TASK_ID]),
            id_range_check(TASK_SCORE, TASK_ID, inputs[TASK_ID], len(names), what,
                           "Map task names to ids in this order.")])
        task_id = inputs.pop(TASK_ID)
        predictions = predict(inputs)
        columns = tf.stack([tf.reshape(tf.cast(predictions[name], tf.float32), [-1])
                            for name in names], axis=1)
        return {"score": tf.gather(columns, task_id, batch_dims=1),
                "task_name": tf.gather(tf.constant(names), task_id)}

    signature = {**input_signature, TASK_ID: tf.TensorSpec((None,), tf.int32)}
    return {TASK_SCORE: (score, signature)}


def task_score_examples(inputs: Mapping[str, np.ndarray], tasks: Sequence[TaskSpec]) -> dict:
    """Warmup inputs of `task_score`: `inputs` with the task ids cycling over the rows.

    Returns:
        `{"task_score": {**inputs, "task_id": ...}}`, or `{}` when the model exports no
        `task_score`.
    """
    if not supports_task_score(tasks):
        return {}
    rows = len(next(iter(inputs.values())))
    return {TASK_SCORE: {**inputs, TASK_ID: (np.arange(rows) % len(tasks)).astype(np.int32)}}
