import numpy as np
import tensorflow as tf

from tf_mtml.tasks.meta import shard_meta_batches


def _global_batches(num_batches=3, batch=4):
    ids = np.arange(num_batches * batch, dtype=np.int32).reshape(num_batches, batch)
    return tf.data.Dataset.from_tensor_slices({"support_x": ids, "query_y": ids * 10})


def _rows(dataset):
    return [e["support_x"].numpy().tolist() for e in dataset]


def test_one_pipeline_two_replicas_gets_consecutive_halves():
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                         num_replicas_in_sync=2)
    sharded = shard_meta_batches(_global_batches(), 4, context)
    assert _rows(sharded) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]
    first = next(iter(sharded))
    np.testing.assert_array_equal(first["query_y"], [0, 10])


def test_each_pipeline_keeps_its_own_rows():
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                         num_replicas_in_sync=4)
    assert _rows(shard_meta_batches(_global_batches(), 4, context)) == [[2], [3], [6], [7], [10],
                                                                         [11]]


def test_single_replica_is_untouched():
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                         num_replicas_in_sync=1)
    assert _rows(shard_meta_batches(_global_batches(), 4, context)) == [[0, 1, 2, 3], [4, 5, 6, 7],
                                                                         [8, 9, 10, 11]]
    assert shard_meta_batches(_global_batches(), 4, None) is not None
