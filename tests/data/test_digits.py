"""Tests for tf_mtml.data.digits: the seeded held-out split and the labelled subsets."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tf_mtml.data.digits import IMAGE_SHAPE, NUM_CLASSES, labelled_subset, load_digits_split


def test_split_is_stratified_disjoint_complete_and_scaled():
    split = load_digits_split(test_fraction=0.3, seed=0)
    raw = load_digits()
    counts = np.bincount(raw.target, minlength=NUM_CLASSES)
    expected_test = np.array([round(0.3 * c) for c in counts])
    np.testing.assert_array_equal(np.bincount(split.test_labels, minlength=10), expected_test)
    np.testing.assert_array_equal(np.bincount(split.train_labels, minlength=10),
                                  counts - expected_test)
    assert split.train_images.shape[1:] == split.test_images.shape[1:] == IMAGE_SHAPE
    assert split.train_images.dtype == np.float32 and split.train_labels.dtype == np.int32
    assert split.train_images.min() == 0.0 and split.train_images.max() == 1.0
    # Together the splits hold every original image once, each with its own label.
    originals = sorted(((img / 16.0).astype(np.float32)[..., None].tobytes(), label)
                       for img, label in zip(raw.images, raw.target, strict=True))
    split_pairs = sorted((img.tobytes(), label) for images, labels in
                         ((split.train_images, split.train_labels),
                          (split.test_images, split.test_labels))
                         for img, label in zip(images, labels, strict=True))
    assert split_pairs == originals


def test_split_depends_on_the_seed_only():
    a, b, c = (load_digits_split(0.3, seed) for seed in (1, 1, 2))
    np.testing.assert_array_equal(a.test_images, b.test_images)
    np.testing.assert_array_equal(a.train_labels, b.train_labels)
    assert not np.array_equal(a.test_images, c.test_images)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, "0.3", True])
def test_bad_test_fraction_is_rejected(fraction):
    with pytest.raises(ValueError, match=r"`test_fraction`, expected a float in \(0, 1\)"):
        load_digits_split(test_fraction=fraction)


def test_labelled_subsets_are_balanced_seeded_and_nested():
    labels = np.repeat(np.arange(4), [3, 7, 5, 9])
    subsets = {k: labelled_subset(labels, k, seed=3) for k in (1, 2, 3)}
    for k, ids in subsets.items():
        assert len(set(ids.tolist())) == len(ids) == 4 * k
        np.testing.assert_array_equal(labels[ids], np.repeat(np.arange(4), k))
    # Per class, the k-subset is the first k of the (k+1)-subset.
    by_class = {k: ids.reshape(4, k) for k, ids in subsets.items()}
    np.testing.assert_array_equal(by_class[2][:, :1], by_class[1])
    np.testing.assert_array_equal(by_class[3][:, :2], by_class[2])
    np.testing.assert_array_equal(labelled_subset(labels, 2, seed=3), subsets[2])
    draws = {tuple(labelled_subset(labels, 2, seed=s)) for s in range(6)}
    assert len(draws) > 1


def test_labelled_subset_of_one_class_ignores_the_others():
    labels = np.array([0, 1, 0, 1, 0, 1, 2, 2])
    first = labelled_subset(labels, 2, seed=5)
    second = labelled_subset(np.where(labels == 2, 1, labels)[:6], 2, seed=5)
    np.testing.assert_array_equal(first[:2], second[:2])


def test_labelled_subset_errors_name_the_bad_value():
    with pytest.raises(ValueError, match=r"per_class=3, but class 1 has only 2 examples"):
        labelled_subset(np.array([0, 0, 0, 1, 1]), 3)
    with pytest.raises(ValueError, match=r"`per_class`, expected a positive integer"):
        labelled_subset(np.array([0, 1]), 0)
    with pytest.raises(ValueError, match=r"1-d array of integer class ids"):
        labelled_subset(np.array([0.0, 1.0]), 1)
    with pytest.raises(ValueError, match=r"`seed`"):
        labelled_subset(np.array([0, 1]), 1, seed=-1)
