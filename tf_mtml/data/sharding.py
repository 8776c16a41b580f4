"""Splitting a global batch stream across replicas so that any topology sees the same data."""

from __future__ import annotations

import tensorflow as tf


def shard_global_batches(dataset: tf.data.Dataset, global_batch_size: int,
                         input_context: tf.distribute.InputContext | None,
                         config_key: str = "task.data.global_batch_size") -> tf.data.Dataset:
    """Splits each global batch into this input pipeline's per-replica batches.

    Every input pipeline builds the same global stream (same seed) and keeps its own
    contiguous rows, one per-replica batch after another, so that replica r of a step sees
    rows `[r * b, (r + 1) * b)` of the global batch: one device, a mirrored machine and several
    workers (`multi_worker_mirrored`, TPU hosts) all train on exactly the same examples in the
    same order. The price is that every pipeline reads the whole stream, which is what
    in-memory and generated data allow. Shapes stay static (TPU).

    Args:
        dataset: Global batches (leading dimension `global_batch_size`, `drop_remainder`), any
            nested structure of tensors.
        global_batch_size: Rows per global batch.
        input_context: From `strategy.distribute_datasets_from_function`; None for one device.
        config_key: The config field that sets `global_batch_size`, named in the error raised
            when it does not divide by the number of replicas.

    Returns:
        The per-replica batches of this pipeline (the dataset itself for one replica).

    Example:

    ```python
    dataset = tf.data.Dataset.range(8).batch(4)  # global batches [0..3], [4..7]
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                         num_replicas_in_sync=2)
    shard_global_batches(dataset, 4, context)  # [2, 3], [6, 7]
    ```
    """
    if input_context is None or input_context.num_replicas_in_sync == 1:
        return dataset
    replicas = input_context.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"Received `{config_key}={global_batch_size}`, which does not divide by the "
            f"{replicas} replicas of the strategy; every replica needs the same static batch "
            f"(TPU). Use a multiple of {replicas}, e.g. {config_key}="
            f"{max(replicas, global_batch_size // replicas * replicas)}."
        )
    per_replica = input_context.get_per_replica_batch_size(global_batch_size)
    local_replicas = input_context.num_replicas_in_sync // input_context.num_input_pipelines
    start = input_context.input_pipeline_id * local_replicas * per_replica
    rows = local_replicas * per_replica

    def take_rows(*batch):
        batch = batch[0] if len(batch) == 1 else batch
        return tf.nest.map_structure(lambda t: t[start:start + rows], batch)

    return dataset.map(take_rows).unbatch().batch(per_replica, drop_remainder=True)
