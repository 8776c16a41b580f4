"""MixUp and CutMix: batches of images mixed with a shuffled copy, labels mixed to match.

Both take a batch of images `(batch, height, width, channels)` and one-hot (or soft) labels
`(batch, classes)`, draw one mixing coefficient `lambda ~ Beta(alpha, alpha)` and one random
permutation of the batch per call, as in the papers, and are stateless: the same batch and
seed give the same result. To mix a dataset, give each batch its own seed:

```python
mixed = dataset.batch(64, drop_remainder=True).enumerate().map(
    lambda i, batch: cutmix(*batch, seed=tf.stack([tf.constant(7, tf.int64), i])))
```
"""

from __future__ import annotations

import math

import tensorflow as tf

from tf_mtml.data.augment import as_seed, to_float_image


def _check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, int | float) and 0 < alpha < math.inf):
        raise ValueError(
            "Received an invalid value for `alpha`, expected a finite float > 0 (the mixing "
            "coefficient is drawn from Beta(alpha, alpha); 1.0 is uniform). "
            f"Received: alpha={alpha!r}"
        )
    return float(alpha)


def _check_batch(images, labels) -> tuple[tf.Tensor, tf.Tensor]:
    images, labels = to_float_image(images), tf.convert_to_tensor(labels)
    if images.shape.rank != 4:
        raise ValueError(
            "Expected a batch of images `(batch, height, width, channels)` (mixing needs "
            f"other images; batch the dataset first). Received: images.shape={images.shape}"
        )
    if labels.shape.rank != 2 or not labels.dtype.is_floating:
        raise ValueError(
            "Expected one-hot or soft float labels `(batch, classes)`, so they can be mixed; "
            "convert integer labels with `tf.one_hot(labels, num_classes)`. "
            f"Received: labels.shape={labels.shape}, labels.dtype={labels.dtype.name}"
        )
    return images, tf.cast(labels, tf.float32)


def _beta_and_partners(alpha: float, seed, batch):
    """`lambda ~ Beta(alpha, alpha)` (float32 scalar) and a random permutation of the batch."""
    seeds = tf.unstack(tf.random.experimental.stateless_split(as_seed(seed), 4))
    # Beta(a, a) = G1 / (G1 + G2) with G ~ Gamma(a). For a small `alpha` both draws can
    # underflow to 0; the limit of Beta(a, a) as a -> 0 is a fair coin on {0, 1}.
    g1 = tf.random.stateless_gamma((), seeds[0], alpha, dtype=tf.float64)
    g2 = tf.random.stateless_gamma((), seeds[1], alpha, dtype=tf.float64)
    coin = tf.cast(tf.random.stateless_uniform((), seeds[2]) < 0.5, tf.float64)
    lam = tf.where(g1 + g2 > 0, g1 / tf.maximum(g1 + g2, 1e-300), coin)
    partners = tf.argsort(tf.random.stateless_uniform((batch,), seeds[3]))
    return tf.cast(lam, tf.float32), partners


@tf.autograph.experimental.do_not_convert
def mixup(images, labels, seed, alpha: float = 0.2) -> tuple[tf.Tensor, tf.Tensor]:
    """MixUp (Zhang et al. 2018, https://arxiv.org/abs/1710.09412).

    `x = lambda * x + (1 - lambda) * x[perm]` and `y = lambda * y + (1 - lambda) * y[perm]`
    with one `lambda ~ Beta(alpha, alpha)` and one random permutation `perm` per batch.

    Args:
        images: `(batch, height, width, channels)`; integer images are scaled to `[0, 1]`.
        labels: `(batch, classes)` one-hot or soft float labels.
        seed: Stateless seed (int or `(2,)` integer tensor).
        alpha: Beta parameter `> 0` (the paper uses 0.1 to 0.4 on ImageNet).

    Returns:
        `(images, labels)`: float32 mixed images and mixed labels.
    """
    alpha = _check_alpha(alpha)
    images, labels = _check_batch(images, labels)
    lam, partners = _beta_and_partners(alpha, seed, tf.shape(images)[0])
    mixed_images = lam * images + (1.0 - lam) * tf.gather(images, partners)
    return mixed_images, lam * labels + (1.0 - lam) * tf.gather(labels, partners)


@tf.autograph.experimental.do_not_convert
def cutmix(images, labels, seed, alpha: float = 1.0) -> tuple[tf.Tensor, tf.Tensor]:
    """CutMix (Yun et al. 2019, https://arxiv.org/abs/1905.04899).

    A box of side `sqrt(1 - lambda)` times the image side (`lambda ~ Beta(alpha, alpha)`),
    centred uniformly at random and clipped to the image, is cut from the permuted batch
    and pasted into every image. The labels are mixed with the box's actual area:
    `y = lambda' * y + (1 - lambda') * y[perm]`, `lambda' = 1 - box_area / image_area`, so
    the label weight of the pasted image is exactly the fraction of its pixels.

    Args:
        images: `(batch, height, width, channels)`; integer images are scaled to `[0, 1]`.
        labels: `(batch, classes)` one-hot or soft float labels.
        seed: Stateless seed (int or `(2,)` integer tensor).
        alpha: Beta parameter `> 0` (the paper uses 1.0).

    Returns:
        `(images, labels)`: float32 images with the pasted boxes and mixed labels.
    """
    alpha = _check_alpha(alpha)
    images, labels = _check_batch(images, labels)
    shape = tf.shape(images)
    mix_seed, y_seed, x_seed = tf.unstack(
        tf.random.experimental.stateless_split(as_seed(seed), 3))
    lam, partners = _beta_and_partners(alpha, mix_seed, shape[0])
    height, width = shape[1], shape[2]
    cut = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(tf.cast(height, tf.float32) * cut, tf.int32)
    cut_w = tf.cast(tf.cast(width, tf.float32) * cut, tf.int32)
    center_y = tf.random.stateless_uniform((), y_seed, maxval=height, dtype=tf.int32)
    center_x = tf.random.stateless_uniform((), x_seed, maxval=width, dtype=tf.int32)
    y1, y2 = tf.maximum(center_y - cut_h // 2, 0), tf.minimum(center_y + cut_h // 2, height)
    x1, x2 = tf.maximum(center_x - cut_w // 2, 0), tf.minimum(center_x + cut_w // 2, width)
    rows, cols = tf.range(height), tf.range(width)
    in_rows = tf.logical_and(rows >= y1, rows < y2)
    in_cols = tf.logical_and(cols >= x1, cols < x2)
    box = tf.logical_and(in_rows[:, None], in_cols[None, :])[None, :, :, None]
    mixed_images = tf.where(box, tf.gather(images, partners), images)
    box_area = tf.cast((y2 - y1) * (x2 - x1), tf.float32)
    lam = 1.0 - box_area / tf.cast(height * width, tf.float32)
    return mixed_images, lam * labels + (1.0 - lam) * tf.gather(labels, partners)
