"""Tests for tf_mtml.data.augment: shapes, ranges, determinism and what each op really does."""

import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.data.augment import (
    color_jitter,
    gaussian_blur,
    random_crop_box,
    random_flip_left_right,
    random_grayscale,
    random_resized_crop,
)

RNG = np.random.default_rng(4)
RGB = RNG.uniform(size=(12, 10, 3)).astype("float32")
GRAY = RNG.uniform(size=(8, 8, 1)).astype("float32")

OPS = {
    "crop": lambda x, s: random_resized_crop(x, (6, 7), s),
    "flip": random_flip_left_right,
    "grayscale": lambda x, s: random_grayscale(x, s, probability=0.5),
    "jitter": color_jitter,
    "blur": lambda x, s: gaussian_blur(x, s, kernel_size=3),
}


@pytest.mark.parametrize("name", OPS)
@pytest.mark.parametrize("image", [RGB, GRAY], ids=["rgb", "gray"])
def test_shape_dtype_range_and_determinism(name, image):
    op = OPS[name]
    out = op(image, 5).numpy()
    expected_shape = (6, 7, image.shape[-1]) if name == "crop" else image.shape
    assert out.shape == expected_shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_array_equal(op(image, 5).numpy(), out)
    np.testing.assert_array_equal(op(image, tf.constant([5, 0])).numpy(), out)
    differs = [not np.array_equal(op(image, seed).numpy(), out) for seed in range(6, 12)]
    if not (name == "grayscale" and image.shape[-1] == 1):
        assert any(differs)


@pytest.mark.parametrize("name", OPS)
def test_a_batch_is_each_image_with_its_split_seed(name):
    batch = np.stack([RGB, RGB[::-1], 1.0 - RGB])
    out = OPS[name](batch, 9).numpy()
    seeds = tf.random.experimental.stateless_split(tf.constant([9, 0], tf.int64), 3)
    for b in range(3):
        np.testing.assert_allclose(out[b], OPS[name](batch[b], seeds[b]).numpy(), atol=1e-6)


def test_integer_images_are_scaled_to_unit_range():
    image = (RGB * 255).astype("uint8")
    out = random_flip_left_right(image, 0, probability=0.0).numpy()
    np.testing.assert_allclose(out, image / 255.0, atol=1e-6)


def test_flips_really_flip():
    np.testing.assert_array_equal(random_flip_left_right(RGB, 1, probability=1.0), RGB[:, ::-1])
    np.testing.assert_array_equal(random_flip_left_right(RGB, 1, probability=0.0), RGB)
    batch = np.stack([RGB] * 16)
    out = random_flip_left_right(batch, 3).numpy()
    flipped = [np.array_equal(o, RGB[:, ::-1]) for o in out]
    assert all(f or np.array_equal(o, RGB) for f, o in zip(flipped, out, strict=True))
    assert 0 < sum(flipped) < 16


@pytest.mark.parametrize("seed", range(20))
def test_crop_boxes_stay_in_bounds_within_scale_and_ratio(seed):
    height, width = 30, 40
    y, x, h, w = random_crop_box(height, width, seed, (0.2, 0.6), (0.5, 2.0)).numpy()
    assert 0 <= y and y + h <= height and 0 <= x and x + w <= width and h >= 1 and w >= 1
    # Sides are rounded to whole pixels: allow half a pixel on each side.
    assert (h - 0.5) * (w - 0.5) <= 0.6 * height * width
    assert 0.2 * height * width <= (h + 0.5) * (w + 0.5)
    assert (w - 0.5) / (h + 0.5) <= 2.0 and 0.5 <= (w + 0.5) / (h - 0.5)


def test_crop_box_falls_back_to_the_central_crop():
    # A 10x10 image cannot hold the whole area at aspect ratio >= 2: torchvision's fallback
    # is the central crop clamped to ratio 2, i.e. width 10 and height round(10 / 2) = 5.
    np.testing.assert_array_equal(random_crop_box(10, 10, 0, (1.0, 1.0), (2.0, 3.0)),
                                  [2, 0, 5, 10])
    np.testing.assert_array_equal(random_crop_box(10, 10, 0, (1.0, 1.0), (1.0, 1.0)),
                                  [0, 0, 10, 10])


@pytest.mark.parametrize("seed", range(5))
def test_resized_crop_takes_its_pixels_from_the_box(seed):
    # Channel 0 holds the column index, channel 1 the row index: resizing with non-negative
    # weights keeps every output inside the box's columns and rows.
    rows, cols = np.meshgrid(np.arange(30.0), np.arange(40.0), indexing="ij")
    image = np.stack([cols, rows], axis=-1).astype("float32") / 64.0
    y, x, h, w = random_crop_box(30, 40, seed).numpy()
    out = random_resized_crop(image, (8, 8), seed).numpy() * 64.0
    assert x - 1e-4 <= out[..., 0].min() and out[..., 0].max() <= x + w - 1 + 1e-4
    assert y - 1e-4 <= out[..., 1].min() and out[..., 1].max() <= y + h - 1 + 1e-4


def test_full_crop_at_the_same_size_is_the_identity():
    out = random_resized_crop(RGB, (12, 10), 3, scale=(1.0, 1.0), ratio=(10 / 12, 10 / 12))
    np.testing.assert_allclose(out.numpy(), RGB, atol=1e-6)


def test_grayscale_uses_luma_and_leaves_gray_images_alone():
    out = random_grayscale(RGB, 0, probability=1.0).numpy()
    luma = RGB @ np.array([0.2989, 0.587, 0.114])
    for channel in range(3):
        np.testing.assert_allclose(out[..., channel], luma, atol=1e-3)
    np.testing.assert_array_equal(random_grayscale(GRAY, 0, probability=1.0), GRAY)


def test_brightness_scales_by_one_factor_in_range():
    image = RGB * 0.5
    out = color_jitter(image, 2, brightness=0.4, contrast=0, saturation=0, hue=0).numpy()
    ratio = out / image
    assert np.ptp(ratio) < 1e-5 and 0.6 <= ratio.mean() <= 1.4


def test_contrast_blends_with_the_mean_luma():
    image = GRAY * 0.5 + 0.25
    out = color_jitter(image, 2, brightness=0, contrast=0.3, saturation=0, hue=0).numpy()
    factor = np.polyfit(image.ravel(), out.ravel(), 1)[0]
    np.testing.assert_allclose(out, factor * image + (1 - factor) * image.mean(), atol=1e-5)
    assert 0.7 <= factor <= 1.3


def test_saturation_and_hue_keep_gray_pixels_and_hue_keeps_value_and_chroma():
    gray_rgb = np.repeat(GRAY, 3, axis=-1)
    out = color_jitter(gray_rgb, 4, brightness=0, contrast=0, saturation=0.8, hue=0.5).numpy()
    np.testing.assert_allclose(out, gray_rgb, rtol=1e-4)  # the luma weights sum to 0.9999
    hue = color_jitter(RGB, 4, brightness=0, contrast=0, saturation=0, hue=0.5).numpy()
    np.testing.assert_allclose(hue.max(-1), RGB.max(-1), atol=1e-5)
    np.testing.assert_allclose(hue.min(-1), RGB.min(-1), atol=1e-5)
    assert not np.allclose(hue, RGB, atol=1e-3)


def test_jitter_probability_zero_is_the_identity():
    np.testing.assert_array_equal(color_jitter(RGB, 1, probability=0.0), RGB)


def _ref_blur(image, sigma, radius):
    """Separable Gaussian blur with reflected borders, one output pixel at a time."""
    taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma**2))
    taps /= taps.sum()
    padded = np.pad(image.astype(np.float64), ((radius, radius), (radius, radius), (0, 0)),
                    mode="reflect")
    height, width = image.shape[:2]
    out = np.zeros(image.shape)
    for i in range(height):
        for j in range(width):
            for a in range(2 * radius + 1):
                for b in range(2 * radius + 1):
                    out[i, j] += taps[a] * taps[b] * padded[i + a, j + b]
    return out


def test_blur_matches_a_reference_convolution_and_keeps_constants():
    got = gaussian_blur(RGB, 0, kernel_size=5, sigma=(1.3, 1.3)).numpy()
    np.testing.assert_allclose(got, _ref_blur(RGB, 1.3, 2), atol=1e-5)
    constant = np.full((9, 9, 1), 0.3, "float32")
    np.testing.assert_allclose(gaussian_blur(constant, 0).numpy(), constant, atol=1e-6)
    np.testing.assert_array_equal(gaussian_blur(RGB, 0, 3, probability=0.0), RGB)


def test_ops_run_inside_dataset_map_with_per_element_seeds():
    images = tf.data.Dataset.from_tensor_slices(np.stack([RGB] * 3)).enumerate()

    def augment(index, image):
        seed = tf.stack([tf.constant(1, tf.int64), index])
        crop = random_resized_crop(image, (5, 5), seed)
        return gaussian_blur(color_jitter(crop, seed), seed, kernel_size=3)

    out = np.stack(list(images.map(augment).as_numpy_iterator()))
    assert out.shape == (3, 5, 5, 3)
    np.testing.assert_array_equal(out, np.stack(list(images.map(augment).as_numpy_iterator())))
    assert not np.array_equal(out[0], out[1])


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="Received: size="):
        random_resized_crop(RGB, (0, 4), 0)
    with pytest.raises(ValueError, match="Received: scale="):
        random_resized_crop(RGB, (4, 4), 0, scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="Received: ratio="):
        random_crop_box(4, 4, 0, ratio=(0.0, 1.0))
    with pytest.raises(ValueError, match="Received: probability=1.5"):
        random_flip_left_right(RGB, 0, probability=1.5)
    with pytest.raises(ValueError, match="Received: seed=-1"):
        random_flip_left_right(RGB, -1)
    with pytest.raises(ValueError, match="Received: seed="):
        random_flip_left_right(RGB, tf.constant([1, 2, 3]))
    with pytest.raises(ValueError, match="Received: hue=0.6"):
        color_jitter(RGB, 0, hue=0.6)
    with pytest.raises(ValueError, match="Received: brightness=-0.1"):
        color_jitter(RGB, 0, brightness=-0.1)
    with pytest.raises(ValueError, match="channels in"):
        color_jitter(np.ones((4, 4, 2), "float32"), 0)
    with pytest.raises(ValueError, match="Received: image.shape=\\(4, 4\\)"):
        random_flip_left_right(np.ones((4, 4), "float32"), 0)
    with pytest.raises(ValueError, match="Received: kernel_size=4"):
        gaussian_blur(RGB, 0, kernel_size=4)
    with pytest.raises(ValueError, match="Received: kernel_size=21"):
        gaussian_blur(RGB, 0, kernel_size=21)
    with pytest.raises(ValueError, match="Received: sigma="):
        gaussian_blur(RGB, 0, kernel_size=3, sigma=(0.0, 1.0))
