"""Two augmented views per example, and the SimCLR augmentation pipeline that makes them."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from tf_mtml.data._common import check_seed
from tf_mtml.data.augment import (
    _blur_kernel_size,
    _check_probability,
    _check_range,
    _check_size,
    _check_strength,
    as_seed,
    color_jitter,
    gaussian_blur,
    random_flip_left_right,
    random_grayscale,
    random_resized_crop,
)


def _view_seeds(seed) -> list[tf.Tensor]:
    return tf.unstack(tf.random.experimental.stateless_split(as_seed(seed), 2))


def two_views(source, augment_fn: Callable, seed):
    """Two independently augmented views of each example.

    With a dataset, example `i` (in dataset order) gets the view seeds
    `stateless_split(stateless_fold_in(seed, i), 2)`, so the views depend only on `seed` and
    the example's position, not on parallelism or on other examples.

    Args:
        source: A `tf.data.Dataset` whose elements are images or tuples `(image, *rest)`
            (e.g. `(image, label)`), or an image / batch of images tensor.
        augment_fn: `augment_fn(image, seed) -> image`, a stateless augmentation such as the
            one `simclr_augmentation` returns; `seed` is a `(2,)` int64 tensor.
        seed: A non-negative int (for a dataset), or an int or `(2,)` integer tensor (for a
            tensor, e.g. a per-example seed inside your own `dataset.map`).

    Returns:
        For a dataset, a dataset of `(view1, view2)` or `(view1, view2, *rest)`; for a
        tensor, the tuple `(view1, view2)`.

    Example:
        ```python
        augment = simclr_augmentation((28, 28))
        pairs = two_views(omniglot_images, augment, seed=0).batch(256, drop_remainder=True)
        ```
    """
    if not callable(augment_fn):
        raise ValueError(
            "Received an invalid value for `augment_fn`, expected a callable "
            f"`augment_fn(image, seed)`. Received: augment_fn={augment_fn!r}"
        )
    if not isinstance(source, tf.data.Dataset):
        first, second = _view_seeds(seed)
        return augment_fn(source, first), augment_fn(source, second)
    check_seed(seed)
    spec = source.element_spec
    if not (isinstance(spec, tf.TensorSpec)
            or (isinstance(spec, tuple) and spec and isinstance(spec[0], tf.TensorSpec))):
        raise ValueError(
            "`two_views` expects dataset elements that are images or tuples `(image, *rest)`. "
            f"Received: element_spec={spec}"
        )
    base = as_seed(seed)

    def views(index, element):
        image, rest = (element[0], tuple(element[1:])) if isinstance(spec, tuple) else (element, ())
        first, second = _view_seeds(tf.random.experimental.stateless_fold_in(base, index))
        return (augment_fn(image, first), augment_fn(image, second), *rest)

    return source.enumerate().map(views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def simclr_augmentation(
    size: tuple[int, int],
    scale=(0.08, 1.0),
    ratio=(3 / 4, 4 / 3),
    flip_probability: float = 0.5,
    jitter_strength: float = 1.0,
    jitter_probability: float = 0.8,
    grayscale_probability: float = 0.2,
    blur_probability: float = 0.5,
    blur_sigma=(0.1, 2.0),
    blur_kernel_size: int | None = None,
) -> Callable:
    """The SimCLR augmentation of Chen et al. 2020 (appendix A) as `augment(image, seed)`.

    Random resized crop to `size`, horizontal flip, colour jitter (strengths
    `(0.8, 0.8, 0.8, 0.2) * jitter_strength`, random order), random grayscale and Gaussian
    blur, each drawn from its own part of `seed`. Grayscale images (1 channel, e.g. 8x8
    digits or Omniglot) keep 1 channel and get brightness and contrast jitter only. SimCLR
    turns blur off for CIFAR-10-sized images: pass `blur_probability=0` for small images if
    the blur destroys too much.

    Args:
        size: Output `(height, width)`.
        scale: Crop area range, as a fraction of the image area.
        ratio: Crop aspect ratio range `width / height`.
        flip_probability: Probability of a horizontal flip.
        jitter_strength: Colour jitter strength `s` in `[0, 2.5]` (SimCLR: 1.0 on ImageNet,
            0.5 on CIFAR-10).
        jitter_probability: Probability of applying the colour jitter.
        grayscale_probability: Probability of converting RGB to grayscale.
        blur_probability: Probability of blurring.
        blur_sigma: Blur standard deviation range, in pixels of the output.
        blur_kernel_size: Blur kernel side; default about 10% of the output side (odd, >= 3).

    Returns:
        `augment(image, seed) -> float32 (*size, channels)` (or a batch of those), for
        `two_views` or `dataset.map`.

    Example:
        ```python
        augment = simclr_augmentation((8, 8), scale=(0.5, 1.0), blur_probability=0.0)
        view = augment(digit_image, seed=tf.constant([0, 7]))
        ```
    """
    _check_range("scale", scale, 1.0)
    _check_range("ratio", ratio)
    for arg, value in (("flip_probability", flip_probability),
                       ("jitter_probability", jitter_probability),
                       ("grayscale_probability", grayscale_probability),
                       ("blur_probability", blur_probability)):
        _check_probability(arg, value)
    s = _check_strength("jitter_strength", jitter_strength, 2.5)
    _check_range("blur_sigma", blur_sigma)
    size = _check_size(size)
    _blur_kernel_size(blur_kernel_size, *size)

    @tf.autograph.experimental.do_not_convert
    def augment(image, seed):
        seeds = tf.unstack(tf.random.experimental.stateless_split(as_seed(seed), 5))
        x = random_resized_crop(image, size, seeds[0], scale, ratio)
        x = random_flip_left_right(x, seeds[1], flip_probability)
        x = color_jitter(x, seeds[2], 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s,
                         probability=jitter_probability)
        x = random_grayscale(x, seeds[3], grayscale_probability)
        return gaussian_blur(x, seeds[4], blur_kernel_size, blur_sigma, blur_probability)

    return augment
