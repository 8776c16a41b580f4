"""Labelled examples indexed by class: the container episodes sample from, and its adapters.

`ClassIndexedData` holds in-memory examples and integer class ids; `from_arrays` and
`from_tf_dataset` build one from any labelled arrays or `(x, y)` dataset (TFDS ones included,
with `as_supervised=True`), `split_classes` splits classes into disjoint meta-splits, and
`labelled_class_datasets` turns a labelled dataset into one stream per class for
`streaming_episode_dataset` when the data does not fit in memory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tf_mtml.data._common import check_positive_int, check_seed, is_int


@dataclasses.dataclass(frozen=True, eq=False)
class ClassIndexedData:
    """Labelled examples indexed by class, the source of in-memory episodes.

    Args:
        examples: array `(M, *example_shape)` of numbers, e.g. images `(M, H, W, C)`.
        labels: integer class ids `(M,)` in `0..num_classes-1`.
        class_names: optional unique name of every class id (`num_classes` of them); a class
            may have no example.

    Example:

    >>> data = ClassIndexedData(np.zeros([6, 2]), np.array([0, 0, 1, 1, 2, 2]))
    >>> data.num_classes, data.class_sizes.tolist()
    (3, [2, 2, 2])
    >>> data.subset([2, 0]).labels.tolist()
    [1, 1, 0, 0]
    """

    examples: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...] | None = None

    def __post_init__(self):
        examples, labels = np.asarray(self.examples), np.asarray(self.labels)
        if examples.ndim == 0 or len(examples) == 0:
            raise ValueError(
                "Received empty data: `examples` must be an array `(num_examples, ...)` with at "
                f"least one example. Received: examples.shape={examples.shape}"
            )
        if not (np.issubdtype(examples.dtype, np.number) or examples.dtype == bool):
            raise ValueError(f"Expected numeric `examples`, received dtype {examples.dtype}.")
        if (labels.shape != (len(examples),) or not np.issubdtype(labels.dtype, np.integer)
                or labels.min() < 0):
            raise ValueError(
                "Received an invalid value for `labels`, expected non-negative integer class "
                f"ids of shape ({len(examples)},), one per example. Received: labels.shape="
                f"{labels.shape}, dtype={labels.dtype}"
                + (f", min={labels.min()}" if np.issubdtype(labels.dtype, np.integer) else "")
            )
        object.__setattr__(self, "examples", examples)
        object.__setattr__(self, "labels", labels.astype(np.int64))
        if self.class_names is not None:
            names = tuple(str(name) for name in self.class_names)
            if len(set(names)) != len(names) or len(names) <= labels.max():
                raise ValueError(
                    "Received an invalid value for `class_names`, expected unique names for "
                    f"class ids 0..{labels.max()} (at least {labels.max() + 1} names). "
                    f"Received {len(names)} names, {len(names) - len(set(names))} duplicated."
                )
            object.__setattr__(self, "class_names", names)

    @property
    def num_classes(self) -> int:
        """Number of class ids: `len(class_names)`, or the largest label plus one."""
        return len(self.class_names) if self.class_names else int(self.labels.max()) + 1

    @property
    def class_sizes(self) -> np.ndarray:
        """Number of examples of each class, int64 `(num_classes,)`."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def class_name(self, class_id: int) -> str:
        """Name of a class for messages: its name if known, else its id."""
        return repr(self.class_names[class_id]) if self.class_names else str(class_id)

    def subset(self, class_ids: Sequence[int]) -> ClassIndexedData:
        """The examples of `class_ids`, relabelled `0..len(class_ids)-1` in that order."""
        ids = np.asarray(class_ids)
        if (ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer)
                or len(np.unique(ids)) != ids.size or ids.min() < 0
                or ids.max() >= self.num_classes):
            raise ValueError(
                "Received an invalid value for `class_ids`, expected a non-empty sequence of "
                f"distinct class ids in 0..{self.num_classes - 1}. Received: class_ids={class_ids}"
            )
        new_ids = np.full(self.num_classes, -1)
        new_ids[ids] = np.arange(ids.size)
        keep = new_ids[self.labels] >= 0
        names = None if self.class_names is None else [self.class_names[i] for i in ids]
        return ClassIndexedData(self.examples[keep], new_ids[self.labels[keep]], names)


def split_classes(
    classes: int | Sequence[str], splits: Sequence[float] | Sequence[int], seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Randomly splits class ids into disjoint sets, e.g. meta-train / meta-val / meta-test.

    Args:
        classes: the number of classes, or their names (ids are positions in it).
        splits: class counts (integers summing to at most the number of classes) or fractions
            (floats in `(0, 1]` summing to at most 1). Fractions summing to 1 use every class:
            leftovers of rounding down go to the largest remainders.
        seed: non-negative seed of the random assignment.

    Returns:
        One sorted int64 array of class ids per split, pairwise disjoint.

    Example:

    >>> train, test = split_classes(10, [0.8, 0.2], seed=0)
    >>> len(train), len(test), len(set(train) & set(test))
    (8, 2, 0)
    """
    check_seed(seed)
    if is_int(classes):
        check_positive_int("classes", classes)
        num_classes = int(classes)
    else:
        names = (list(classes) if isinstance(classes, Sequence | np.ndarray)
                 and not isinstance(classes, str) else [])
        if not names or len(set(names)) != len(names):
            raise ValueError(
                "Received an invalid value for `classes`, expected a positive number of classes "
                f"or a non-empty list of unique class names. Received: classes={classes!r}"
            )
        num_classes = len(names)
    counts = _split_counts(num_classes, splits)
    order = np.random.default_rng(seed).permutation(num_classes)
    bounds = np.cumsum([0, *counts])
    return tuple(np.sort(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True))


def _split_counts(num_classes: int, splits) -> list[int]:
    values = (list(splits) if isinstance(splits, Sequence | np.ndarray)
              and not isinstance(splits, str) else None)
    if not values or not all(
        isinstance(value, int | float | np.number) and not isinstance(value, bool)
        for value in values
    ):
        raise ValueError(
            "Received an invalid value for `splits`, expected a non-empty list of class counts "
            f"or fractions. Received: splits={splits!r}"
        )
    if all(is_int(value) for value in values):
        if min(values) <= 0 or sum(values) > num_classes:
            raise ValueError(
                f"Received splits={values}, expected positive class counts summing to at most "
                f"the {num_classes} classes. Lower the counts."
            )
        return [int(value) for value in values]
    fractions = np.asarray(values, dtype=np.float64)
    if not np.all((fractions > 0) & (fractions <= 1)) or fractions.sum() > 1 + 1e-9:
        raise ValueError(
            f"Received splits={values}, expected fractions in (0, 1] summing to at most 1 "
            "(or integer class counts)."
        )
    exact = fractions * num_classes
    counts = np.floor(exact + 1e-9).astype(int)
    if abs(fractions.sum() - 1) <= 1e-9:
        leftover = num_classes - counts.sum()
        counts[np.argsort(counts - exact, kind="stable")[:leftover]] += 1
    if counts.min() == 0:
        raise ValueError(
            f"Received splits={values} for {num_classes} classes, which leaves split "
            f"{int(np.argmin(counts))} without a class. Use larger fractions or more classes."
        )
    return counts.tolist()


def from_arrays(x, y, class_names: Sequence[str] | None = None) -> ClassIndexedData:
    """`ClassIndexedData` from examples and labels of any integer or string values.

    The classes are the distinct label values, in sorted order, renumbered `0..C-1`; values
    with no example get no class.

    Args:
        x: examples, array `(M, *example_shape)`.
        y: labels `(M,)`, integers (e.g. TFDS `ClassLabel` ids) or strings.
        class_names: for integer labels, the name of every label value (e.g. TFDS
            `info.features["label"].names`); by default a class is named by its value.

    Returns:
        A `ClassIndexedData` whose class `c` is the `c`-th smallest label value.

    Example:

    >>> data = from_arrays(np.zeros([3, 2]), np.array([7, 3, 7]))
    >>> data.labels.tolist(), data.class_names
    ([1, 0, 1], ('3', '7'))
    """
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim != 1 or x.ndim == 0 or len(y) != len(x) or y.size == 0:
        raise ValueError(
            "Expected non-empty examples `x` (M, ...) and labels `y` (M,), one label per "
            f"example. Received: x.shape={x.shape}, y.shape={y.shape}"
        )
    values, ids = np.unique(y, return_inverse=True)
    if y.dtype.kind in "SUO":
        if class_names is not None:
            raise ValueError(
                "`class_names` names integer label values; string labels already are names. "
                "Received string labels and class_names: drop `class_names`."
            )
        names = [v.decode() if isinstance(v, bytes) else str(v) for v in values]
    elif np.issubdtype(y.dtype, np.integer):
        if class_names is not None and (values[0] < 0 or values[-1] >= len(class_names)):
            raise ValueError(
                f"Received {len(class_names)} class_names, but the labels range over "
                f"{values[0]}..{values[-1]}. Pass one name per label value 0..{values[-1]}."
            )
        names = [str(class_names[v] if class_names is not None else v) for v in values]
    else:
        raise ValueError(
            f"Expected integer or string labels `y`, received dtype {y.dtype}. Cast class ids "
            "to integers."
        )
    return ClassIndexedData(x, ids.reshape(-1), tuple(names))


def from_tf_dataset(
    dataset: tf.data.Dataset,
    max_examples: int | None = None,
    class_names: Sequence[str] | None = None,
) -> ClassIndexedData:
    """Materialises a small labelled `(x, y)` dataset in memory, e.g. a TFDS split.

    Args:
        dataset: unbatched `(example, label)` pairs, examples of one static shape, scalar
            integer or string labels (TFDS: `as_supervised=True`).
        max_examples: read at most this many examples; required for an infinite dataset.
        class_names: as in `from_arrays`.

    Returns:
        A `ClassIndexedData`, as `from_arrays`.

    Example:

    >>> ds = tf.data.Dataset.from_tensor_slices((tf.zeros([4, 2]), [0, 1, 1, 0]))
    >>> from_tf_dataset(ds).class_sizes.tolist()
    [2, 2]
    """
    _check_labelled_spec(dataset)
    if max_examples is not None:
        check_positive_int("max_examples", max_examples)
        dataset = dataset.take(max_examples)
    elif dataset.cardinality() == tf.data.INFINITE_CARDINALITY:
        raise ValueError("The dataset is infinite; pass `max_examples` to read a finite part.")
    batches = list(dataset.batch(1024).as_numpy_iterator())
    if not batches:
        raise ValueError("Received an empty dataset; there are no examples to sample from.")
    x, y = (np.concatenate(parts) for parts in zip(*batches, strict=True))
    return from_arrays(x, y, class_names)


def labelled_class_datasets(
    dataset: tf.data.Dataset, class_ids: Sequence[int]
) -> list[tf.data.Dataset]:
    """One dataset of examples per class, filtered from a labelled stream.

    Every class's dataset filters the whole source, so streaming episodes read the source
    once per class per epoch of that class: fine for a fast local source, costly for a slow
    one (then write per-class files and use `class_datasets_from_files`). The class sizes
    `streaming_episode_dataset` needs come from the dataset's metadata or one counting pass,
    e.g. `np.bincount(list(dataset.map(lambda x, y: y).as_numpy_iterator()))`.

    Args:
        dataset: unbatched `(example, label)` pairs with scalar integer labels.
        class_ids: the label values to keep, one dataset each, in this order.

    Returns:
        A list of datasets of examples, for `streaming_episode_dataset`.

    Example:

    >>> ds = tf.data.Dataset.from_tensor_slices(([1.0, 2.0, 3.0], [0, 1, 0]))
    >>> [[float(x) for x in d] for d in labelled_class_datasets(ds, [0, 1])]
    [[1.0, 3.0], [2.0]]
    """
    spec = _check_labelled_spec(dataset)
    if not spec[1].dtype.is_integer:
        raise ValueError(
            f"Expected integer labels, the dataset's labels are {spec[1].dtype.name}. Map them "
            "to integer class ids first."
        )
    ids = list(class_ids) if isinstance(class_ids, Sequence | np.ndarray) else []
    if not ids or not all(is_int(c) for c in ids) or len(set(ids)) != len(ids):
        raise ValueError(
            "Received an invalid value for `class_ids`, expected a non-empty sequence of "
            f"distinct integer label values. Received: class_ids={class_ids!r}"
        )

    def keep(class_id: int) -> tf.data.Dataset:
        wanted = tf.constant(class_id, tf.int64)
        return dataset.filter(lambda x, y: tf.equal(tf.cast(y, tf.int64), wanted)).map(
            lambda x, y: x)

    return [keep(int(c)) for c in ids]


def _check_labelled_spec(dataset: tf.data.Dataset) -> tuple[tf.TensorSpec, tf.TensorSpec]:
    spec = getattr(dataset, "element_spec", None)
    if not (isinstance(spec, tuple) and len(spec) == 2
            and all(isinstance(s, tf.TensorSpec) for s in spec)):
        raise ValueError(
            "Expected a tf.data.Dataset of unbatched `(example, label)` pairs (TFDS: "
            f"`as_supervised=True`). Received element_spec={spec}. Map dict elements to "
            "pairs, e.g. `.map(lambda d: (d['image'], d['label']))`."
        )
    if not spec[0].shape.is_fully_defined() or spec[1].shape.rank != 0:
        raise ValueError(
            "Expected examples of one static shape and scalar labels. Received element_spec="
            f"{spec}. Resize examples to one shape and pass an unbatched dataset (`.unbatch()`)."
        )
    return spec
