"""Tests for tf_mtml.data.multi_label."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.data import MMoESyntheticProblem, multi_label_dataset


def _data(n=8):
    """Row `i` has feature `[i, 10 i]` and labels `a = i`, `b = -i`."""
    index = np.arange(n)
    return (
        np.stack([index, 10 * index], axis=1).astype(np.float32),
        {"a": index.astype(np.float32), "b": -index.astype(np.int64)},
    )


def _as_numpy(dataset, num_batches):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in dataset.take(num_batches)]


def test_static_shapes_and_aligned_rows():
    x, y = _data()
    ds = multi_label_dataset(x, y, batch_size=4)
    for spec in tf.nest.flatten(ds.element_spec):
        assert spec.shape.is_fully_defined(), spec
    assert ds.element_spec[1]["b"] == tf.TensorSpec((4,), tf.int64)
    for features, labels in _as_numpy(ds, 6):
        np.testing.assert_array_equal(features[:, 1], 10 * features[:, 0])
        np.testing.assert_array_equal(labels["a"], features[:, 0])
        np.testing.assert_array_equal(labels["b"], -features[:, 0])


def test_repeat_reshuffles_every_epoch_and_replays_for_every_iterator():
    x, y = _data()
    ds = multi_label_dataset(x, y, batch_size=4, seed=3)
    first = _as_numpy(ds, 10)
    epochs = np.concatenate([labels["a"] for _, labels in first]).reshape(5, 8)
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(8))
    assert len({tuple(epoch) for epoch in epochs}) > 1
    np.testing.assert_equal(_as_numpy(ds, 10), first)
    np.testing.assert_equal(_as_numpy(multi_label_dataset(x, y, batch_size=4, seed=3), 10), first)
    other = _as_numpy(multi_label_dataset(x, y, batch_size=4, seed=4), 10)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))


def test_single_epoch_without_shuffle_keeps_order_and_remainder():
    x, y = _data(10)
    ds = multi_label_dataset(x, y, batch_size=4, shuffle=False, repeat=False, drop_remainder=False)
    labels = [b[1]["a"] for b in _as_numpy(ds, 100)]
    assert [len(a) for a in labels] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(labels), np.arange(10))


def test_single_shuffled_epoch_sees_every_example_once():
    x, y = _data(10)
    ds = multi_label_dataset(x, y, batch_size=5, repeat=False, seed=1)
    labels = np.concatenate([b[1]["a"] for b in _as_numpy(ds, 100)])
    np.testing.assert_array_equal(np.sort(labels), np.arange(10))
    assert not np.array_equal(labels, np.arange(10))


def test_dict_features_and_missing_labels_pass_through():
    y = {"a": np.array([1.0, np.nan, 3.0]), "b": np.array([-1, 2, -1])}
    ds = multi_label_dataset({"u": np.zeros([3, 2]), "v": np.ones([3])}, y, batch_size=3,
                             shuffle=False)
    features, labels = _as_numpy(ds, 1)[0]
    assert set(features) == {"u", "v"}
    np.testing.assert_array_equal(labels["a"], y["a"])
    np.testing.assert_array_equal(labels["b"], y["b"])


def test_mmoe_synthetic_data():
    x, labels = MMoESyntheticProblem(input_dim=6).sample(20, seed=0)
    features, batch = _as_numpy(multi_label_dataset(x, labels, batch_size=5), 1)[0]
    assert features.shape == (5, 6)
    assert set(batch) == {"y1", "y2"}


@pytest.mark.parametrize(
    "features, labels, kwargs, match",
    [
        (np.zeros([10, 2]), {"a": np.zeros(10), "b": np.zeros(9)},
         {}, "the labels of task 'b' has 9, but feature 'x' has 10"),
        ({"u": np.zeros([4]), "v": np.zeros([5])}, {"a": np.zeros(4)},
         {}, "feature 'v' has 5, but feature 'u' has 4"),
        (np.zeros([0, 2]), {"a": np.zeros(0)}, {}, "no examples"),
        (np.zeros([3, 2]), {"a": 1.0}, {}, "labels of task 'a'.*scalar"),
        (np.zeros([3, 2]), {}, {}, "labels={}"),
        (np.zeros([3, 2]), {"a": np.zeros(3)}, {"batch_size": 0}, "batch_size=0"),
        (np.zeros([3, 2]), {"a": np.zeros(3)}, {"seed": -1}, "seed=-1"),
        (np.zeros([3, 2]), {"a": np.zeros(3)}, {"batch_size": 4, "repeat": False},
         "batch_size=4 with only 3 examples"),
    ],
)
def test_invalid_arguments(features, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        multi_label_dataset(features, labels, **{"batch_size": 2, **kwargs})


@pytest.mark.parametrize("global_seed", [0, 7])
def test_order_ignores_the_global_seed(global_seed):
    # Regression: with tf.random.set_seed(0) the per-epoch shuffle failed to trace.
    x = np.arange(12, dtype="float32")
    reference = [b[0].numpy().tolist()
                 for b in multi_label_dataset(x, {"a": x}, batch_size=4, seed=3).take(6)]
    keras.utils.set_random_seed(global_seed)
    try:
        got = [b[0].numpy().tolist()
               for b in multi_label_dataset(x, {"a": x}, batch_size=4, seed=3).take(6)]
    finally:
        tf.random.set_seed(None)
    assert got == reference
