"""Helpers shared by the `tf_mtml.data` pipelines."""

import numpy as np
import tensorflow as tf


def is_int(value) -> bool:
    """Whether `value` is a Python or NumPy integer (booleans excluded)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_positive_int(arg: str, value) -> None:
    """Raises a `ValueError` naming `arg` unless `value` is a positive integer."""
    if not is_int(value) or value <= 0:
        raise ValueError(
            f"Received an invalid value for `{arg}`, expected a positive integer. "
            f"Received: {arg}={value!r}"
        )


def check_seed(seed) -> None:
    """Raises a `ValueError` unless `seed` is a non-negative integer."""
    if not is_int(seed) or seed < 0:
        raise ValueError(
            "Received an invalid value for `seed`, expected a non-negative integer. "
            f"Received: seed={seed!r}"
        )


def shuffled_epochs(dataset: tf.data.Dataset, buffer_size: int, seed: int) -> tf.data.Dataset:
    """`dataset` repeated forever, reshuffled every epoch, identical for every iterator."""
    # `shuffle(seed=s).repeat()` keeps its shuffle state in the dataset, so a second iterator
    # would see other orders; seeding each epoch by its index makes every iterator identical.
    def epoch(index: tf.Tensor) -> tf.data.Dataset:
        # The order must depend on `seed` and the epoch only. With a global seed set, TF's
        # `get_seed` mixes it in and, when it is 0, compares the tensor op seed as a Python
        # bool (an error in graph mode); clearing this function graph's seed avoids both.
        tf.compat.v1.get_default_graph().seed = None
        return dataset.shuffle(buffer_size, seed=seed + index, reshuffle_each_iteration=False)

    return tf.data.Dataset.counter().flat_map(epoch)
