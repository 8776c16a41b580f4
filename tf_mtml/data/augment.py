"""Seeded image augmentations as TensorFlow ops, for `tf.data.Dataset.map`.

Every op is stateless: it takes a `seed` (a Python int or a shape-`(2,)` integer tensor) and
gives the same output for the same image and seed, whatever the order or parallelism of
execution. Images are `(height, width, channels)` or batches `(batch, height, width,
channels)` with 1 (grayscale) or 3 (RGB) channels; integer images are scaled to `[0, 1]`
floats, float images are taken to be in `[0, 1]`, and outputs are float32 in `[0, 1]`. A
batch is processed image by image, image `b` with seed `tf.random.experimental.
stateless_split(seed, batch)[b]`.

The ops and their SimCLR defaults follow Chen et al. 2020 (https://arxiv.org/abs/2002.05709,
appendix A) and torchvision's `RandomResizedCrop` and `ColorJitter`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

from tf_mtml.data._common import check_seed, is_int


def as_seed(seed) -> tf.Tensor:
    """A shape-`(2,)` int64 stateless seed from a non-negative int or a `(2,)` integer tensor."""
    if is_int(seed):
        check_seed(seed)
        return tf.constant([seed, 0], tf.int64)
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer or seed.shape != (2,):
        raise ValueError(
            "Received an invalid value for `seed`, expected a non-negative int or an integer "
            f"tensor of shape (2,). Received: seed={seed!r}"
        )
    return tf.cast(seed, tf.int64)


def to_float_image(image) -> tf.Tensor:
    """`image` as float32: integer images scaled to `[0, 1]`, float images only cast."""
    image = tf.convert_to_tensor(image)
    if image.shape.rank not in (3, 4):
        raise ValueError(
            "Expected an image `(height, width, channels)` or a batch `(batch, height, width, "
            f"channels)`. Received: image.shape={tuple(image.shape)}"
        )
    if image.dtype.is_integer:
        return tf.image.convert_image_dtype(image, tf.float32)
    return tf.cast(image, tf.float32)


def _channels(image, allowed=(1, 3)) -> int:
    channels = image.shape[-1]
    if channels not in allowed:
        raise ValueError(
            f"Expected images with a static number of channels in {allowed} (1 = grayscale, "
            f"3 = RGB). Received: image.shape={tuple(image.shape)}"
        )
    return channels


def _check_probability(arg: str, value) -> float:
    if not (isinstance(value, int | float) and 0 <= value <= 1):
        raise ValueError(
            f"Received an invalid value for `{arg}`, expected a probability in [0, 1]. "
            f"Received: {arg}={value!r}"
        )
    return float(value)


def _check_range(arg: str, value, high: float = math.inf) -> tuple[float, float]:
    """`value` as a float pair `(min, max)` with `0 < min <= max <= high`."""
    if (not isinstance(value, tuple | list) or len(value) != 2
            or not all(isinstance(v, int | float) for v in value)
            or not 0 < value[0] <= value[1] <= high):
        raise ValueError(
            f"Received an invalid value for `{arg}`, expected a pair `(min, max)` with "
            f"0 < min <= max <= {high}. Received: {arg}={value!r}"
        )
    return float(value[0]), float(value[1])


def _check_size(size) -> tuple[int, int]:
    if not (isinstance(size, tuple | list) and len(size) == 2
            and all(is_int(v) and v > 0 for v in size)):
        raise ValueError(
            "Received an invalid value for `size`, expected `(height, width)` with positive "
            f"ints. Received: size={size!r}"
        )
    return int(size[0]), int(size[1])


def _blur_kernel_size(kernel_size: int | None, height: int | None, width: int | None) -> int:
    """The validated `kernel_size` of `gaussian_blur`, defaulting to ~10% of the image side."""
    if kernel_size is None:
        if height is None or width is None:
            raise ValueError(
                "`gaussian_blur` needs `kernel_size` when the image size is not static. "
                f"Received: image size {(height, width)}"
            )
        kernel_size = 2 * max(1, min(height, width) // 20) + 1
    radius = kernel_size // 2 if is_int(kernel_size) else 0
    if (not is_int(kernel_size) or kernel_size < 3 or kernel_size % 2 == 0
            or any(side is not None and side <= radius for side in (height, width))):
        raise ValueError(
            "Received an invalid value for `kernel_size`, expected an odd int >= 3 whose half "
            f"is smaller than the image sides {(height, width)} (borders are reflected). "
            f"Received: kernel_size={kernel_size!r}"
        )
    return kernel_size


def _per_image(fn: Callable, image, seed) -> tf.Tensor:
    """Applies `fn(image, seed)` to one image, or to each image of a batch with split seeds."""
    image, seed = to_float_image(image), as_seed(seed)
    if image.shape.rank == 3:
        return fn(image, seed)
    seeds = tf.random.experimental.stateless_split(seed, tf.shape(image)[0])
    return tf.map_fn(lambda args: fn(*args), (image, seeds), fn_output_signature=tf.float32)


def _random_apply(probability: float, fn: Callable, image, seed) -> tf.Tensor:
    """`fn(image)` with probability `probability`, else `image`."""
    if probability in (0.0, 1.0):
        return fn(image) if probability else image
    apply = tf.random.stateless_uniform((), seed) < probability
    return tf.cond(apply, lambda: fn(image), lambda: image)


@tf.autograph.experimental.do_not_convert
def random_crop_box(height, width, seed, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tf.Tensor:
    """Samples the crop of `random_resized_crop` (torchvision's `RandomResizedCrop` rule).

    Up to 10 attempts draw an area fraction uniformly from `scale` and an aspect ratio
    `width / height` log-uniformly from `ratio`; the first whose rounded box fits the image is
    placed uniformly at random. If none fits, the largest central crop whose aspect ratio is
    clamped to `ratio` is used.

    Args:
        height: Image height (int or scalar tensor).
        width: Image width.
        seed: Stateless seed.
        scale: Range of the crop area as a fraction of the image area, within `(0, 1]`.
        ratio: Range of the crop aspect ratio `width / height`.

    Returns:
        int32 `(4,)`: `[offset_y, offset_x, crop_height, crop_width]`, inside the image.
    """
    scale = _check_range("scale", scale, 1.0)
    ratio = _check_range("ratio", ratio)
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    draws = tf.random.stateless_uniform((10, 4), as_seed(seed))
    area = h * w * (scale[0] + (scale[1] - scale[0]) * draws[:, 0])
    log_ratio = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * draws[:, 1]
    crop_w = tf.round(tf.sqrt(area * tf.exp(log_ratio)))
    crop_h = tf.round(tf.sqrt(area / tf.exp(log_ratio)))
    fits = (crop_w >= 1) & (crop_w <= w) & (crop_h >= 1) & (crop_h <= h)
    first = tf.argmax(tf.cast(fits, tf.int32))
    central_w = tf.clip_by_value(tf.round(h * ratio[1]), 1.0, w)
    central_h = tf.clip_by_value(tf.round(w / ratio[0]), 1.0, h)
    found = tf.reduce_any(fits)
    crop_h = tf.where(found, crop_h[first], central_h)
    crop_w = tf.where(found, crop_w[first], central_w)
    offset_y = tf.where(found, tf.floor(draws[first, 2] * (h - crop_h + 1)), (h - crop_h) // 2)
    offset_x = tf.where(found, tf.floor(draws[first, 3] * (w - crop_w + 1)), (w - crop_w) // 2)
    box = tf.stack([tf.minimum(offset_y, h - crop_h), tf.minimum(offset_x, w - crop_w),
                    crop_h, crop_w])
    return tf.cast(box, tf.int32)


@tf.autograph.experimental.do_not_convert
def random_resized_crop(image, size: tuple[int, int], seed, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> tf.Tensor:
    """Crops a random box (see `random_crop_box`) and resizes it to `size` (bilinear, antialiased).

    Args:
        image: `(height, width, channels)` or `(batch, height, width, channels)`.
        size: Output `(height, width)`, positive ints.
        seed: Stateless seed.
        scale: Crop area range as a fraction of the image area (SimCLR: `(0.08, 1.0)`).
        ratio: Crop aspect ratio range (SimCLR: `(3/4, 4/3)`).

    Returns:
        float32 `(*size, channels)`, or `(batch, *size, channels)`.

    Example:
        ```python
        dataset = dataset.map(lambda x, s: random_resized_crop(x, (28, 28), s))
        ```
    """
    size = _check_size(size)
    _check_range("scale", scale, 1.0)
    _check_range("ratio", ratio)

    def crop(image, seed):
        shape = tf.shape(image)
        box = random_crop_box(shape[0], shape[1], seed, scale, ratio)
        patch = tf.slice(image, [box[0], box[1], 0], [box[2], box[3], -1])
        resized = tf.image.resize(patch, size, method="bilinear", antialias=True)
        return tf.ensure_shape(tf.clip_by_value(resized, 0.0, 1.0), (*size, image.shape[-1]))

    return _per_image(crop, image, seed)


@tf.autograph.experimental.do_not_convert
def random_flip_left_right(image, seed, probability: float = 0.5) -> tf.Tensor:
    """Mirrors the image horizontally with probability `probability` (SimCLR: 0.5)."""
    probability = _check_probability("probability", probability)
    return _per_image(lambda x, s: _random_apply(probability, lambda y: y[:, ::-1], x, s),
                     image, seed)


def _grayscale(image) -> tf.Tensor:
    """Luma `0.2989 R + 0.587 G + 0.114 B` (ITU-R 601-2), kept as 3 channels."""
    return tf.tile(tf.image.rgb_to_grayscale(image), [1, 1, 3])


@tf.autograph.experimental.do_not_convert
def random_grayscale(image, seed, probability: float = 0.2) -> tf.Tensor:
    """Converts RGB images to 3-channel grayscale with probability `probability` (SimCLR: 0.2).

    Grayscale (1-channel) images are returned unchanged.
    """
    probability = _check_probability("probability", probability)
    image = to_float_image(image)
    if _channels(image) == 1:
        return image
    return _per_image(lambda x, s: _random_apply(probability, _grayscale, x, s), image, seed)


def _check_strength(arg: str, value, high: float = math.inf) -> float:
    if not (isinstance(value, int | float) and 0 <= value <= high):
        raise ValueError(
            f"Received an invalid value for `{arg}`, expected a float in [0, {high}] "
            f"(0 disables it). Received: {arg}={value!r}"
        )
    return float(value)


def _jitter_transforms(image, seed, brightness, contrast, saturation, hue) -> list[Callable]:
    """The enabled colour transforms of one image, each with its factor drawn from `seed`."""
    draws = tf.random.stateless_uniform((4,), seed)

    def factor(strength, draw):
        low = max(0.0, 1.0 - strength)
        return low + (1.0 + strength - low) * draw

    def blend(x, other, weight):
        return tf.clip_by_value(weight * x + (1.0 - weight) * other, 0.0, 1.0)

    rgb = image.shape[-1] == 3
    gray = tf.image.rgb_to_grayscale if rgb else tf.identity
    transforms = []
    if brightness:
        b = factor(brightness, draws[0])
        transforms.append(lambda x: tf.clip_by_value(b * x, 0.0, 1.0))
    if contrast:
        c = factor(contrast, draws[1])
        transforms.append(lambda x: blend(x, tf.reduce_mean(gray(x)), c))
    if saturation and rgb:
        s = factor(saturation, draws[2])
        transforms.append(lambda x: blend(x, gray(x), s))
    if hue and rgb:
        delta = hue * (2.0 * draws[3] - 1.0)
        transforms.append(lambda x: tf.image.adjust_hue(x, delta))
    return transforms


@tf.autograph.experimental.do_not_convert
def color_jitter(image, seed, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, hue: float = 0.1, random_order: bool = True,
                 probability: float = 1.0) -> tf.Tensor:
    """Randomly changes brightness, contrast, saturation and hue (torchvision `ColorJitter`).

    Factors are drawn uniformly per image: brightness, contrast and saturation in
    `[max(0, 1 - s), 1 + s]`, hue shift in `[-hue, hue]` (a fraction of the colour wheel).
    Brightness scales the pixels, contrast blends with the mean luma, saturation blends with
    the luma image, hue rotates the HSV hue; values are clipped to `[0, 1]` after each step.
    SimCLR uses strengths `(0.8, 0.8, 0.8, 0.2) * s` in random order with probability 0.8.
    On grayscale (1-channel) images only brightness and contrast apply: saturation and hue
    do not exist there.

    Args:
        image: `(height, width, channels)` or a batch, 1 or 3 channels.
        seed: Stateless seed.
        brightness: Brightness strength `>= 0` (0 disables it).
        contrast: Contrast strength `>= 0`.
        saturation: Saturation strength `>= 0`.
        hue: Hue strength in `[0, 0.5]`.
        random_order: Whether to apply the transforms in a random order per image.
        probability: Probability of jittering an image at all.

    Returns:
        float32 images of the input shape.
    """
    strengths = (_check_strength("brightness", brightness), _check_strength("contrast", contrast),
                 _check_strength("saturation", saturation), _check_strength("hue", hue, 0.5))
    probability = _check_probability("probability", probability)
    image = to_float_image(image)
    _channels(image)

    def jitter(x, seed):
        factor_seed, order_seed, apply_seed = tf.unstack(
            tf.random.experimental.stateless_split(seed, 3))
        transforms = _jitter_transforms(x, factor_seed, *strengths)

        def apply_all(x):
            if not random_order:
                for transform in transforms:
                    x = transform(x)
                return x
            order = tf.argsort(tf.random.stateless_uniform((len(transforms),), order_seed))
            for step in range(len(transforms)):
                x = tf.switch_case(order[step], [lambda t=t, x=x: t(x) for t in transforms])
            return x

        return _random_apply(probability, apply_all, x, apply_seed)

    return _per_image(jitter, image, seed)


@tf.autograph.experimental.do_not_convert
def gaussian_blur(image, seed, kernel_size: int | None = None, sigma=(0.1, 2.0),
                  probability: float = 1.0) -> tf.Tensor:
    """Blurs with a Gaussian kernel of standard deviation drawn uniformly from `sigma`.

    SimCLR blurs with probability 0.5, `sigma` in `[0.1, 2.0]` and a kernel of about 10% of
    the image side; borders are reflected (as torchvision's `GaussianBlur`).

    Args:
        image: `(height, width, channels)` or a batch.
        seed: Stateless seed.
        kernel_size: Odd kernel side `>= 3`, smaller than twice each image side. Default
            `2 * max(1, min(height, width) // 20) + 1` (23 for 224 px, 3 for 28 px), which
            needs a static image size.
        sigma: Range `(min, max)` of the standard deviation in pixels, `0 < min <= max`.
        probability: Probability of blurring an image.

    Returns:
        float32 images of the input shape.
    """
    image = to_float_image(image)
    sigma = _check_range("sigma", sigma)
    probability = _check_probability("probability", probability)
    height, width, channels = image.shape[-3:]
    if channels is None:
        raise ValueError(
            "`gaussian_blur` needs a static number of channels. "
            f"Received: image.shape={tuple(image.shape)}"
        )
    kernel_size = _blur_kernel_size(kernel_size, height, width)
    radius = kernel_size // 2
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)

    def blur(x, seed):
        std = sigma[0] + (sigma[1] - sigma[0]) * tf.random.stateless_uniform((), seed)
        weights = tf.exp(-tf.square(offsets) / (2.0 * tf.square(std)))
        weights = tf.tile((weights / tf.reduce_sum(weights))[:, None, None], [1, channels, 1])
        padded = tf.pad(x[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
        rows = tf.nn.depthwise_conv2d(padded, weights[:, None], [1, 1, 1, 1], "VALID")
        return tf.nn.depthwise_conv2d(rows, weights[None], [1, 1, 1, 1], "VALID")[0]

    def maybe_blur(x, seed):
        sigma_seed, apply_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        return _random_apply(probability, lambda y: blur(y, sigma_seed), x, apply_seed)

    return _per_image(maybe_blur, image, seed)
