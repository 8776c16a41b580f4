import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.data.sharding import shard_global_batches


def _global_batches(num_batches=3, batch=4):
    ids = np.arange(num_batches * batch, dtype=np.int32).reshape(num_batches, batch)
    return tf.data.Dataset.from_tensor_slices({"support_x": ids, "query_y": ids * 10})


def _rows(dataset):
    return [e["support_x"].numpy().tolist() for e in dataset]


def test_one_pipeline_two_replicas_gets_consecutive_halves():
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                         num_replicas_in_sync=2)
    sharded = shard_global_batches(_global_batches(), 4, context)
    assert _rows(sharded) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9], [10, 11]]
    first = next(iter(sharded))
    np.testing.assert_array_equal(first["query_y"], [0, 10])


def test_each_pipeline_keeps_its_own_rows():
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                         num_replicas_in_sync=4)
    rows = _rows(shard_global_batches(_global_batches(), 4, context))
    assert rows == [[2], [3], [6], [7], [10], [11]]


def test_single_replica_is_untouched():
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                         num_replicas_in_sync=1)
    rows = _rows(shard_global_batches(_global_batches(), 4, context))
    assert rows == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert shard_global_batches(_global_batches(), 4, None) is not None


def test_tuples_of_dicts_are_split_alike():
    ids = np.arange(8, dtype=np.int32).reshape(2, 4)
    dataset = tf.data.Dataset.from_tensor_slices(({"x": ids}, {"y1": ids * 10}))
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=0,
                                         num_replicas_in_sync=2)
    batches = [(x["x"].numpy().tolist(), y["y1"].numpy().tolist())
               for x, y in shard_global_batches(dataset, 4, context)]
    assert batches == [([0, 1], [0, 10]), ([4, 5], [40, 50])]


def test_a_batch_that_does_not_divide_by_the_replicas_names_the_field():
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                         num_replicas_in_sync=8)
    with pytest.raises(ValueError, match=r"`task.data.meta_batch_size=6`.*8 replicas.*=8"):
        shard_global_batches(_global_batches(), 6, context, config_key="task.data.meta_batch_size")
