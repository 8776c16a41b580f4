"""Batches of in-memory examples that carry a label for every task (multi-label data)."""

from collections.abc import Mapping

import numpy as np
import tensorflow as tf

from tf_mtml.data._common import check_positive_int, check_seed, shuffled_epochs


def multi_label_dataset(
    features: np.ndarray | Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    *,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    repeat: bool = True,
    drop_remainder: bool = True,
) -> tf.data.Dataset:
    """Batches of in-memory examples that carry a label for every task.

    With `repeat=True` the dataset is infinite and reshuffled every epoch, and every iterator
    replays the same batches for a seed. With `repeat=False` each iteration is one epoch, and
    successive iterations (e.g. Keras `fit` epochs) see different orders.

    Args:
        features: array `(n, ...)` or dict of arrays `(n, ...)`.
        labels: task name -> array `(n, ...)`; mark missing labels with NaN (float) or -1
            (integer); float labels are otherwise finite, and so are float features.
        batch_size: examples per batch.
        shuffle: whether to shuffle (the buffer holds the whole data set).
        seed: non-negative shuffle seed.
        repeat: whether to repeat forever.
        drop_remainder: whether to drop the last partial batch, keeping shapes static.

    Returns:
        A `tf.data.Dataset` of `(features, {task_name: (batch_size, ...)})`.

    Example:

    >>> ds = multi_label_dataset(np.zeros([10, 3]), {"a": np.ones(10)}, batch_size=4)
    >>> next(iter(ds))[1]["a"].shape
    TensorShape([4])
    """
    check_positive_int("batch_size", batch_size)
    check_seed(seed)
    num_examples = _num_examples(features, labels)
    _check_values(features, labels)
    if not repeat and drop_remainder and num_examples < batch_size:
        raise ValueError(
            f"Received batch_size={batch_size} with only {num_examples} examples, "
            "repeat=False and drop_remainder=True, which yields no batch. Lower `batch_size`, "
            "or pass repeat=True or drop_remainder=False."
        )
    dataset = tf.data.Dataset.from_tensor_slices((features, dict(labels)))
    if shuffle and repeat:
        dataset = shuffled_epochs(dataset, num_examples, seed)
    elif shuffle:
        dataset = dataset.shuffle(num_examples, seed=seed, reshuffle_each_iteration=True)
    elif repeat:
        dataset = dataset.repeat()
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def _num_examples(
    features: np.ndarray | Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]
) -> int:
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError(
            "Received an invalid value for `labels`, expected a non-empty dict "
            f"{{task_name: array}}. Received: labels={labels!r}"
        )
    feature_items = features.items() if isinstance(features, Mapping) else [("x", features)]
    columns = {f"feature {key!r}": value for key, value in feature_items}
    columns.update({f"the labels of task {task!r}": value for task, value in labels.items()})
    lengths = {}
    for column, value in columns.items():
        if np.ndim(value) == 0:
            raise ValueError(
                f"Expected {column} to be an array with a leading example dimension. "
                f"Received a scalar: {value!r}"
            )
        lengths[column] = np.shape(value)[0]
    (first, num_examples), *others = lengths.items()
    for column, length in others:
        if length != num_examples:
            raise ValueError(
                "All features and labels must have the same number of examples (first "
                f"dimension): {column} has {length}, but {first} has {num_examples}."
            )
    if num_examples == 0:
        raise ValueError(f"Received no examples: {first} is empty. Pass at least one example.")
    return num_examples


def _check_values(
    features: np.ndarray | Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]
) -> None:
    """Raises on values that would silently turn into a NaN or infinite loss."""
    feature_items = features.items() if isinstance(features, Mapping) else [("x", features)]
    for key, value in feature_items:
        value = np.asarray(value)
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            first = int(np.argmax(~np.isfinite(value).reshape(len(value), -1).all(axis=1)))
            raise ValueError(
                f"Feature {key!r} holds non-finite values (NaN or Inf), first in example "
                f"{first}. Features have no missing-value marker: impute them (e.g. the training "
                "mean plus a 0/1 'missing' feature) or drop those examples."
            )
    for task, value in labels.items():
        value = np.asarray(value)
        infinite = np.isinf(value) if np.issubdtype(value.dtype, np.floating) else None
        if infinite is not None and infinite.any():
            first = int(np.argmax(infinite.reshape(len(value), -1).any(axis=1)))
            raise ValueError(
                f"The labels of task {task!r} hold infinite values, first in example {first}: "
                f"{value[first].tolist()!r}. NaN marks a missing label; fix the infinite ones "
                "or mark them NaN."
            )
