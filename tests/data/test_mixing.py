"""Tests for tf_mtml.data.mixing: MixUp and CutMix images and labels agree exactly."""

import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.data.mixing import cutmix, mixup

BATCH, HEIGHT, WIDTH = 6, 9, 7
# Image i is constant 0.1 * (i + 1), so every pixel tells which image it came from.
VALUES = 0.1 * np.arange(1, BATCH + 1, dtype="float32")
IMAGES = VALUES[:, None, None, None] * np.ones((BATCH, HEIGHT, WIDTH, 2), "float32")
LABELS = np.eye(BATCH, dtype="float32")


def _lambda_and_partners(mixed_labels):
    """Recovers the shared lambda and the partner of each example from one-hot mixed labels."""
    partners = np.array([
        i if np.isclose(row[i], 1.0) else int(np.argmax(np.where(np.arange(BATCH) == i, -1, row)))
        for i, row in enumerate(mixed_labels)
    ])
    lams = [row[i] for i, row in enumerate(mixed_labels) if partners[i] != i]
    return lams, partners


@pytest.mark.parametrize("seed", range(4))
def test_mixup_images_and_labels_use_the_same_lambda(seed):
    images, labels = (t.numpy() for t in mixup(IMAGES, LABELS, seed, alpha=1.0))
    lams, partners = _lambda_and_partners(labels)
    assert sorted(partners) == list(range(BATCH))  # a permutation
    lam = lams[0]
    np.testing.assert_allclose(lams, lam, rtol=1e-6)
    np.testing.assert_allclose(labels.sum(1), 1.0, rtol=1e-6)
    for i, j in enumerate(partners):
        np.testing.assert_allclose(images[i], lam * VALUES[i] + (1 - lam) * VALUES[j], rtol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_cutmix_label_weight_is_the_pasted_area_exactly(seed):
    images, labels = (t.numpy() for t in cutmix(IMAGES, LABELS, seed, alpha=1.0))
    _, partners = _lambda_and_partners(labels)
    assert sorted(partners) == list(range(BATCH))
    masks = []
    for i, j in enumerate(partners):
        pasted = np.isclose(images[i], VALUES[j]).all(-1)
        kept = np.isclose(images[i], VALUES[i]).all(-1)
        assert (pasted | kept).all()
        if i != j:
            assert labels[i, j] == pytest.approx(pasted.mean(), abs=1e-6)
            assert labels[i, i] == pytest.approx(kept.mean(), abs=1e-6)
            masks.append(pasted)
    for mask in masks:  # the same axis-aligned box in every image
        np.testing.assert_array_equal(mask, masks[0])
        rows, cols = np.nonzero(mask)
        if rows.size:
            assert mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()


def test_beta_one_lambda_is_uniform():
    lams = []
    for seed in range(200):
        labels = mixup(IMAGES[:2], LABELS[:2, :2], seed, alpha=1.0)[1].numpy()
        lams.append(labels[0, 0] if not np.isclose(labels[0, 0], 1.0) else None)
    lams = np.array([lam for lam in lams if lam is not None])  # partner was itself: skip
    # Uniform(0, 1): mean 1/2, variance 1/12; 5 standard errors of tolerance.
    assert abs(lams.mean() - 0.5) < 5 * np.sqrt(1 / 12 / lams.size)
    assert abs(lams.var() - 1 / 12) < 5 * np.sqrt(1 / 180 / lams.size)


def test_determinism_and_tiny_alpha():
    first = mixup(IMAGES, LABELS, 11, alpha=0.2)
    second = mixup(IMAGES, LABELS, tf.constant([11, 0]), alpha=0.2)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(cutmix(IMAGES, LABELS, 1)[0], cutmix(IMAGES, LABELS, 2)[0])
    for seed in range(5):
        images, labels = mixup(IMAGES, LABELS, seed, alpha=1e-4)
        assert np.isfinite(images.numpy()).all() and np.isfinite(labels.numpy()).all()


def test_batches_of_a_dataset_get_their_own_seeds():
    dataset = tf.data.Dataset.from_tensor_slices((IMAGES, LABELS)).repeat(2).batch(BATCH)
    mixed = dataset.enumerate().map(
        lambda i, batch: cutmix(*batch, seed=tf.stack([tf.constant(7, tf.int64), i])))
    (first, _), (second, _) = mixed.as_numpy_iterator()
    assert first.shape == IMAGES.shape and not np.array_equal(first, second)


@pytest.mark.parametrize("fn", [mixup, cutmix])
def test_bad_inputs_are_rejected(fn):
    for alpha in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="Received: alpha="):
            fn(IMAGES, LABELS, 0, alpha=alpha)
    with pytest.raises(ValueError, match="tf.one_hot"):
        fn(IMAGES, np.arange(BATCH), 0)
    with pytest.raises(ValueError, match="batch the dataset first"):
        fn(IMAGES[0], LABELS, 0)
