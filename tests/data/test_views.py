"""Tests for tf_mtml.data.views: two views per example and the SimCLR pipeline."""

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from tf_mtml.data.augment import random_flip_left_right
from tf_mtml.data.views import simclr_augmentation, two_views

RNG = np.random.default_rng(5)
IMAGES = RNG.uniform(size=(6, 10, 10, 3)).astype("float32")


def _flip(image, seed):
    return random_flip_left_right(image, seed)


def test_dataset_views_come_from_the_same_image_and_differ():
    dataset = tf.data.Dataset.from_tensor_slices((IMAGES, np.arange(6)))
    out = list(two_views(dataset, _flip, seed=3).as_numpy_iterator())
    assert [label for _, _, label in out] == list(range(6))
    for (view1, view2, label) in out:
        for view in (view1, view2):
            image = IMAGES[label]
            assert np.array_equal(view, image) or np.array_equal(view, image[:, ::-1])
    assert any(not np.array_equal(view1, view2) for view1, view2, _ in out)


def test_dataset_views_are_deterministic_per_seed():
    dataset = tf.data.Dataset.from_tensor_slices(IMAGES)
    augment = simclr_augmentation((6, 6))

    def views(pairs):
        return np.stack([np.stack(pair) for pair in pairs])

    pairs = two_views(dataset, augment, 0)
    first = views(pairs)
    assert first.shape == (6, 2, 6, 6, 3)
    np.testing.assert_array_equal(first, views(pairs))  # a second pass over the same dataset
    assert not np.array_equal(first, views(two_views(dataset, augment, 1)))


def test_tensor_views_use_independent_seeds():
    view1, view2 = two_views(IMAGES[0], simclr_augmentation((8, 8)), tf.constant([4, 2]))
    assert view1.shape == view2.shape == (8, 8, 3)
    assert not np.array_equal(view1, view2)
    again = two_views(IMAGES[0], simclr_augmentation((8, 8)), tf.constant([4, 2]))
    np.testing.assert_array_equal(again[0], view1)


def test_simclr_pipeline_on_8x8_grayscale_digits():
    digits = load_digits()
    images = (digits.images[:8, :, :, None] / 16.0).astype("float32")
    augment = simclr_augmentation((8, 8), scale=(0.5, 1.0))
    batch = augment(images, 0).numpy()
    assert batch.shape == (8, 8, 8, 1) and batch.dtype == np.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    dataset = tf.data.Dataset.from_tensor_slices((images, digits.target[:8]))
    pairs = two_views(dataset, augment, seed=1).batch(4, drop_remainder=True)
    view1, view2, labels = next(iter(pairs))
    assert view1.shape == view2.shape == (4, 8, 8, 1) and labels.shape == (4,)


def _omniglot_png():
    root = Path(os.environ.get("TF_MTML_DATA_DIR") or Path(__file__).parents[3] / "shared" / "data")
    archive = root / "omniglot" / "images_background.zip"
    if not archive.exists():
        pytest.skip(f"Omniglot not found at {archive}; set TF_MTML_DATA_DIR to the data root.")
    with zipfile.ZipFile(archive) as zipped:
        name = next(n for n in zipped.namelist() if n.endswith(".png"))
        return zipped.read(name)


def test_simclr_pipeline_on_an_omniglot_image_at_28x28():
    image = tf.io.decode_png(_omniglot_png(), channels=1)  # 105x105 uint8
    assert image.shape == (105, 105, 1)
    view1, view2 = two_views(image, simclr_augmentation((28, 28)), 0)
    assert view1.shape == view2.shape == (28, 28, 1) and view1.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(view1)) and float(tf.reduce_max(view1)) <= 1.0
    assert not np.array_equal(view1, view2)


def test_bad_arguments_are_rejected():
    dataset = tf.data.Dataset.from_tensor_slices(IMAGES)
    with pytest.raises(ValueError, match="Received: augment_fn=None"):
        two_views(dataset, None, 0)
    with pytest.raises(ValueError, match="Received: seed=-2"):
        two_views(dataset, _flip, -2)
    with pytest.raises(ValueError, match="element_spec"):
        two_views(tf.data.Dataset.from_tensor_slices({"x": IMAGES}), _flip, 0)
    with pytest.raises(ValueError, match="Received: size="):
        simclr_augmentation((8,))
    with pytest.raises(ValueError, match="Received: kernel_size=17"):
        simclr_augmentation((8, 8), blur_kernel_size=17)
    with pytest.raises(ValueError, match="Received: jitter_strength=3"):
        simclr_augmentation((8, 8), jitter_strength=3)
    with pytest.raises(ValueError, match="Received: blur_probability=-1"):
        simclr_augmentation((8, 8), blur_probability=-1)
