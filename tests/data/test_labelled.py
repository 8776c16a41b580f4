"""Tests for tf_mtml.data.labelled."""

import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.data import (
    ClassIndexedData,
    from_arrays,
    from_tf_dataset,
    labelled_class_datasets,
    split_classes,
    streaming_episode_dataset,
)
from tf_mtml.meta.base import QUERY_X, SUPPORT_X, SUPPORT_Y


class TestClassIndexedData:
    def test_sizes_and_subset(self):
        labels = np.array([2, 0, 2, 3, 0, 2])
        data = ClassIndexedData(np.arange(6.0)[:, None], labels, ["a", "b", "c", "d"])
        assert data.num_classes == 4
        np.testing.assert_array_equal(data.class_sizes, [2, 0, 3, 1])
        subset = data.subset([3, 2])
        assert subset.class_names == ("d", "c")
        np.testing.assert_array_equal(subset.examples[:, 0], [0, 2, 3, 5])
        np.testing.assert_array_equal(subset.labels, [1, 1, 0, 1])
        assert ClassIndexedData(np.zeros([3, 1]), np.array([0, 4, 4])).num_classes == 5

    @pytest.mark.parametrize(
        "examples, labels, match",
        [
            (np.zeros([0, 2]), np.zeros([0], int), "empty data"),
            (np.zeros([3, 2]), np.array([0, 1]), r"labels.shape=\(2,\)"),
            (np.zeros([2, 2]), np.array([0.0, 1.0]), "dtype=float64"),
            (np.zeros([2, 2]), np.array([0, -1]), "min=-1"),
            (np.zeros([2, 2]), np.array(["a", "b"]), "dtype=<U1"),
            (np.array([["a"], ["b"]]), np.array([0, 1]), "numeric `examples`"),
        ],
    )
    def test_invalid_data(self, examples, labels, match):
        with pytest.raises(ValueError, match=match):
            ClassIndexedData(examples, labels)

    def test_invalid_names(self):
        with pytest.raises(ValueError, match=r"at least 3 names\). Received 2 names"):
            ClassIndexedData(np.zeros([2, 1]), np.array([0, 2]), ["a", "b"])
        with pytest.raises(ValueError, match="1 duplicated"):
            ClassIndexedData(np.zeros([2, 1]), np.array([0, 1]), ["a", "a"])

    @pytest.mark.parametrize("class_ids", [[], [0, 0], [3], [-1], [0.5]])
    def test_invalid_subset(self, class_ids):
        data = ClassIndexedData(np.zeros([3, 1]), np.array([0, 1, 2]))
        with pytest.raises(ValueError, match=r"distinct class ids in 0..2"):
            data.subset(class_ids)


class TestSplitClasses:
    def test_counts_are_disjoint_random_and_seeded(self):
        splits = split_classes(20, [12, 5, 3], seed=1)
        assert [len(s) for s in splits] == [12, 5, 3]
        np.testing.assert_array_equal(np.sort(np.concatenate(splits)), np.arange(20))
        np.testing.assert_equal(split_classes(20, [12, 5, 3], seed=1), splits)
        other = split_classes(20, [12, 5, 3], seed=2)
        assert not np.array_equal(other[0], splits[0])
        assert not np.array_equal(splits[0], np.arange(12)), "not shuffled"

    def test_fractions(self):
        # 0.7 * 11 = 7.7, 0.2 * 11 = 2.2, 0.1 * 11 = 1.1: the one leftover class goes to the
        # largest remainder (7.7).
        assert [len(s) for s in split_classes(11, [0.7, 0.2, 0.1])] == [8, 2, 1]
        # Fractions summing to less than 1 leave classes out.
        train, test = split_classes(10, [0.5, 0.2])
        assert (len(train), len(test)) == (5, 2) and not set(train) & set(test)

    def test_class_names(self):
        splits = split_classes(["a", "b", "c", "d"], [2, 2], seed=0)
        np.testing.assert_array_equal(np.sort(np.concatenate(splits)), np.arange(4))

    @pytest.mark.parametrize(
        "classes, splits, match",
        [
            (5, [3, 3], "summing to at most the 5 classes"),
            (5, [0, 3], "positive class counts"),
            (5, [0.5, 0.6], "summing to at most 1"),
            (5, [1.5], r"fractions in \(0, 1\]"),
            (5, [0.9, 0.1], "leaves split 1 without a class"),
            (5, [], "non-empty list"),
            (5, "ab", "non-empty list"),
            (5, [True], "non-empty list"),
            (0, [1], "classes=0"),
            (["a", "a"], [1], "unique class names"),
            (2.5, [1], "unique class names"),
            ("abc", [1], "unique class names"),
        ],
    )
    def test_invalid(self, classes, splits, match):
        with pytest.raises(ValueError, match=match):
            split_classes(classes, splits)


class TestFromArrays:
    def test_integer_labels_are_compacted_in_sorted_order(self):
        data = from_arrays(np.arange(4.0)[:, None], np.array([7, 3, 7, 9]),
                           class_names=[f"n{i}" for i in range(10)])
        np.testing.assert_array_equal(data.labels, [1, 0, 1, 2])
        assert data.class_names == ("n3", "n7", "n9")
        assert from_arrays(np.zeros([2, 1]), [5, 2]).class_names == ("2", "5")

    def test_string_labels(self):
        data = from_arrays(np.zeros([3, 1]), np.array([b"dog", b"cat", b"dog"]))
        assert data.class_names == ("cat", "dog")
        np.testing.assert_array_equal(data.labels, [1, 0, 1])

    @pytest.mark.parametrize(
        "x, y, names, match",
        [
            (np.zeros([3, 1]), [0, 1], None, r"x.shape=\(3, 1\), y.shape=\(2,\)"),
            (np.zeros([2, 1]), [0.5, 1.0], None, "integer or string labels"),
            (np.zeros([2, 1]), ["a", "b"], ["x", "y"], "drop `class_names`"),
            (np.zeros([2, 1]), [0, 4], ["x", "y"], r"range over 0..4"),
        ],
    )
    def test_invalid(self, x, y, names, match):
        with pytest.raises(ValueError, match=match):
            from_arrays(x, y, names)


class TestFromTfDataset:
    def test_matches_from_arrays(self):
        x = np.random.default_rng(0).random([2500, 3]).astype(np.float32)
        y = np.random.default_rng(1).integers(0, 7, 2500)
        data = from_tf_dataset(tf.data.Dataset.from_tensor_slices((x, y)))
        expected = from_arrays(x, y)
        np.testing.assert_array_equal(data.examples, expected.examples)
        np.testing.assert_array_equal(data.labels, expected.labels)
        limited = from_tf_dataset(tf.data.Dataset.from_tensor_slices((x, y)).repeat(),
                                  max_examples=10)
        np.testing.assert_array_equal(limited.examples, x[:10])

    def test_invalid(self):
        pairs = tf.data.Dataset.from_tensor_slices((np.zeros([4, 2]), [0, 1, 0, 1]))
        with pytest.raises(ValueError, match="as_supervised=True"):
            from_tf_dataset(pairs.map(lambda x, y: {"image": x, "label": y}))
        with pytest.raises(ValueError, match="pass `max_examples`"):
            from_tf_dataset(pairs.repeat())
        with pytest.raises(ValueError, match="max_examples=0"):
            from_tf_dataset(pairs, max_examples=0)
        with pytest.raises(ValueError, match="one static shape and scalar labels"):
            from_tf_dataset(pairs.batch(2))
        with pytest.raises(ValueError, match="empty dataset"):
            from_tf_dataset(pairs.filter(lambda x, y: False))


def test_labelled_class_datasets_filter_each_class():
    x = np.arange(20.0)
    y = np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4])
    source = tf.data.Dataset.from_tensor_slices((x, y))
    class_ids = [3, 5, 9]
    datasets = labelled_class_datasets(source, class_ids)
    for class_id, dataset in zip(class_ids, datasets, strict=True):
        np.testing.assert_array_equal(list(dataset.as_numpy_iterator()), x[y == class_id])
    sizes = [int(np.sum(y == c)) for c in class_ids]
    episode = next(iter(streaming_episode_dataset(datasets, sizes, 3, 1, 2, seed=0)))
    for label in range(3):
        values = np.concatenate([episode[SUPPORT_X].numpy()[episode[SUPPORT_Y] == label],
                                 episode[QUERY_X].numpy()[label * 2:label * 2 + 2]])
        assert len(set(y[values.astype(int)])) == 1 and len(set(values)) == 3


def test_labelled_class_datasets_errors():
    source = tf.data.Dataset.from_tensor_slices((np.zeros([3, 2]), [0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="Expected integer labels"):
        labelled_class_datasets(source, [0])
    source = tf.data.Dataset.from_tensor_slices((np.zeros([3, 2]), [0, 1, 0]))
    for class_ids in ([], [0, 0], [0.5], 3):
        with pytest.raises(ValueError, match="distinct integer label values"):
            labelled_class_datasets(source, class_ids)
