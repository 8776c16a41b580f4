"""scikit-learn's bundled 8x8 handwritten digits: a seeded held-out split and labelled subsets.

The UCI "Optical Recognition of Handwritten Digits" test set as shipped inside scikit-learn
(`sklearn.datasets.load_digits`, 1,797 images of 10 classes, 4-bit grey levels 0..16): it
needs no download, so the default contrastive experiment runs on any machine.

Semi-supervised protocol: `load_digits_split` holds out a stratified, seeded test split;
contrastive pretraining sees the train images without labels; `labelled_subset` draws the
`k` labelled examples per class that a linear probe or a fine-tune may use. Subsets of one
seed are nested (the 1-per-class subset is inside the 5-per-class one), so that label budgets
differ only in the labels they add.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tf_mtml.data._common import check_positive_int, check_seed

NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)
# `load_digits` grey levels run 0..16 (4x4 blocks of 32x32 bitmaps counted); /16 maps to [0, 1].
_MAX_GREY_LEVEL = 16.0


@dataclasses.dataclass(frozen=True, eq=False)
class DigitsSplit:
    """The digits split into train and test images.

    Attributes:
        train_images: float32 `(n_train, 8, 8, 1)` in `[0, 1]`.
        train_labels: int32 `(n_train,)` in `0..9`.
        test_images: float32 `(n_test, 8, 8, 1)` in `[0, 1]`.
        test_labels: int32 `(n_test,)` in `0..9`.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def load_digits_split(test_fraction: float = 0.3, seed: int = 0) -> DigitsSplit:
    """Loads the bundled digits and holds out a stratified, seeded test split.

    Each class keeps `round(test_fraction * class_size)` of its images, chosen by a seeded
    permutation, for the test split; the order within each split is shuffled by the same seed.

    Args:
        test_fraction: Fraction of every class held out, in `(0, 1)`.
        seed: Non-negative seed of the split.

    Returns:
        A `DigitsSplit`; the two splits are disjoint and together hold all 1,797 images.

    Example:

    >>> split = load_digits_split(test_fraction=0.3, seed=0)
    >>> split.train_images.shape, split.test_images.shape
    ((1258, 8, 8, 1), (539, 8, 8, 1))
    """
    from sklearn.datasets import load_digits

    if isinstance(test_fraction, bool) or not isinstance(test_fraction, int | float) or not (
            0 < test_fraction < 1):
        raise ValueError(
            "Received an invalid value for `test_fraction`, expected a float in (0, 1) (the "
            f"share of each class held out for testing). Received: test_fraction={test_fraction!r}"
        )
    check_seed(seed)
    digits = load_digits()
    images = (digits.images / _MAX_GREY_LEVEL).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for label in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == label))
        test[members[:round(test_fraction * len(members))]] = True
    train_ids, test_ids = rng.permutation(np.flatnonzero(~test)), rng.permutation(
        np.flatnonzero(test))
    return DigitsSplit(images[train_ids], labels[train_ids], images[test_ids], labels[test_ids])


def labelled_subset(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of `per_class` examples of every class, drawn with a seed.

    Class `c`'s examples are permuted by a generator seeded with `(seed, c)` and the first
    `per_class` kept, so subsets of one seed are nested across `per_class` and a class's
    choice does not depend on the other classes.

    Args:
        labels: Integer class ids `(n,)`.
        per_class: Examples to draw from every class present in `labels`.
        seed: Non-negative seed.

    Returns:
        int64 indices into `labels`, class-major (class 0's, then class 1's, ...).

    Example:

    >>> labelled_subset(np.array([0, 1, 0, 1, 0, 1]), per_class=2, seed=0).shape
    (4,)
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not len(labels) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            "Received an invalid value for `labels`, expected a non-empty 1-d array of integer "
            f"class ids. Received: shape={labels.shape}, dtype={labels.dtype}"
        )
    check_positive_int("per_class", per_class)
    check_seed(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) < per_class:
            raise ValueError(
                f"Received per_class={per_class}, but class {label} has only {len(members)} "
                f"examples. Use per_class <= {len(members)}."
            )
        rng = np.random.default_rng([seed, int(label)])
        chosen.append(rng.permutation(members)[:per_class])
    return np.concatenate(chosen).astype(np.int64)
