"""Tests of tf_mtml.layers.task_descriptor."""

import keras
import numpy as np
import pytest

from tests.layers.helpers import (
    assert_config_round_trip,
    assert_keras_file_round_trip,
    fit_briefly,
)
from tf_mtml.layers import TaskDescriptor

IDS = np.array([0, 2, 1, 2], dtype="int32")


@pytest.mark.parametrize("ids", [IDS, IDS[:, None]])
def test_one_hot_matches_numpy(ids):
    z = TaskDescriptor("one_hot", num_tasks=3)(ids)
    np.testing.assert_array_equal(np.asarray(z), np.eye(3, dtype="float32")[IDS])
    assert z.dtype == "float32"


@pytest.mark.parametrize("mode", ["one_hot", "embedding"])
def test_out_of_range_ids_give_zeros(mode):
    layer = TaskDescriptor(mode, num_tasks=3, embedding_dim=None if mode == "one_hot" else 4)
    z = np.asarray(layer(np.array([1, 3, -1, 7], dtype="int32")))
    assert np.any(z[0] != 0)
    np.testing.assert_array_equal(z[1:], 0.0)


def test_embedding_is_a_table_lookup():
    layer = TaskDescriptor("embedding", num_tasks=3, embedding_dim=5)
    z = np.asarray(layer(IDS))
    table = np.asarray(layer.embeddings)
    assert table.shape == (3, 5)
    np.testing.assert_allclose(z, table[IDS], rtol=1e-6)


def test_metadata_identity_and_projection():
    meta = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(TaskDescriptor("metadata")(meta)), meta)
    layer = TaskDescriptor("metadata", embedding_dim=2)
    z = np.asarray(layer(meta))
    kernel, bias = (np.asarray(w) for w in layer.projection.weights)
    np.testing.assert_allclose(z, meta @ kernel + bias, rtol=1e-5, atol=1e-6)
    assert layer.compute_output_shape((None, 3)) == (None, 2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mode": "task_id", "num_tasks": 2}, "mode='task_id'"),
        ({"mode": "one_hot"}, "num_tasks=None"),
        ({"mode": "one_hot", "num_tasks": 0}, "num_tasks=0"),
        ({"mode": "one_hot", "num_tasks": 2.0}, "num_tasks=2.0"),
        ({"mode": "one_hot", "num_tasks": 2, "embedding_dim": 4}, "embedding_dim=4"),
        ({"mode": "embedding", "num_tasks": 2}, "embedding_dim=None"),
        ({"mode": "embedding", "num_tasks": 2, "embedding_dim": -1}, "embedding_dim=-1"),
        ({"mode": "metadata", "num_tasks": 2}, "num_tasks=2"),
    ],
)
def test_invalid_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TaskDescriptor(**kwargs)


def test_invalid_input_shapes_raise():
    with pytest.raises(ValueError, match=r"input_shape=\(None, 2\)"):
        TaskDescriptor("one_hot", num_tasks=3).build((None, 2))
    with pytest.raises(ValueError, match=r"input_shape=\(None,\)"):
        TaskDescriptor("metadata").build((None,))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "one_hot", "num_tasks": 3},
        {"mode": "embedding", "num_tasks": 3, "embedding_dim": 2},
        {"mode": "metadata", "embedding_dim": 2},
    ],
)
def test_config_and_keras_file_round_trip(kwargs, tmp_path):
    layer = TaskDescriptor(**kwargs)
    assert_config_round_trip(layer)
    metadata = kwargs["mode"] == "metadata"
    inputs = keras.Input((3,)) if metadata else keras.Input((), dtype="int32")
    model = keras.Model(inputs, keras.layers.Dense(1)(layer(inputs)))
    data = np.ones((4, 3), "float32") if metadata else IDS
    assert_keras_file_round_trip(model, data, tmp_path)


def test_mixed_precision(mixed_precision):
    assert TaskDescriptor("one_hot", num_tasks=3)(IDS).dtype == "float16"
    layer = TaskDescriptor("embedding", num_tasks=3, embedding_dim=2)
    assert layer(IDS).dtype == "float16"
    assert layer.embeddings.dtype == "float32"


def test_embedding_trains_in_functional_and_subclassed_models():
    ids = keras.Input((1,), dtype="int32")
    functional = keras.Model(ids, TaskDescriptor("embedding", num_tasks=3, embedding_dim=2)(ids))

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.descriptor = TaskDescriptor("embedding", num_tasks=3, embedding_dim=2)

        def call(self, inputs):
            return self.descriptor(inputs)

    targets = np.ones((8, 2), "float32")
    for model in (functional, Subclassed()):
        fit_briefly(model, np.tile(IDS, 2)[:, None], targets)
