"""Few-shot episodes as `tf.data` pipelines: N-way K-shot tasks sampled from labelled classes.

An episode holds `N` classes drawn without replacement, with `K` support and `Q` query examples
of each, disjoint within the class. Labels are remapped to `0..N-1` in a random order per
episode, and both sets are class-major (label 0's examples, then label 1's, ...). Every shape
is static and the episodes are a pure function of the seed, so every iterator replays them:

- `episode_dataset` holds the data in memory and samples episode `i` with stateless random ops
  keyed by `(seed, i)`, so episodes are sampled in parallel and do not depend on batching;
- `streaming_episode_dataset` follows the Meta-Dataset design (https://arxiv.org/abs/1903.03096)
  for data that does not fit in memory: one stream of `K+Q`-example chunks per class, mixed by
  a seeded stream of class choices.

The in-memory source is a `ClassIndexedData` (see `tf_mtml.data.labelled`, which also adapts
arrays and labelled `tf.data` / TFDS datasets and splits classes into meta-splits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from tf_mtml.data._common import check_positive_int, check_seed
from tf_mtml.data.labelled import ClassIndexedData
from tf_mtml.meta.base import QUERY_X, QUERY_Y, SUPPORT_X, SUPPORT_Y

# `rotations=True` adds the 90, 180 and 270 degree copies of every class as new classes.
NUM_ROTATIONS = 4


def episode_dataset(
    data: ClassIndexedData,
    num_ways: int,
    num_shots: int,
    num_queries: int,
    meta_batch_size: int | None = None,
    seed: int = 0,
    rotations: bool = False,
    num_episodes: int | None = None,
    first_episode: int = 0,
) -> tf.data.Dataset:
    """Episodes sampled from in-memory data with stateless random ops.

    Episode `i` depends only on `(seed, i)`: the same seed gives the same episodes whatever
    the batching or parallelism, and a finite `num_episodes` is a fixed evaluation set.

    Args:
        data: the classes to sample from; every class needs `num_shots + num_queries` examples.
        num_ways: `N`, classes per episode, drawn without replacement.
        num_shots: `K`, support examples per class.
        num_queries: `Q`, query examples per class, disjoint from the support examples.
        meta_batch_size: `B`, episodes per element; `None` yields single episodes.
        seed: non-negative seed.
        rotations: whether rotating each class by 90, 180 and 270 degrees (`tf.image.rot90`)
            makes three more classes, as in the Omniglot protocol of Santoro et al. 2016
            (https://arxiv.org/abs/1605.06065). Needs square images `(M, H, H, C)`.
        num_episodes: number of episodes (a multiple of `B`); `None` repeats forever.
        first_episode: index of the first episode of an endless stream: the stream from
            episode `i` on, in O(1) (how a resumed training run continues its input).

    Returns:
        A `tf.data.Dataset` of dicts: `support_x` float32 `(B, N*K, *example_shape)`,
        `support_y` int32 `(B, N*K)`, `query_x` float32 `(B, N*Q, *example_shape)`, `query_y`
        int32 `(B, N*Q)`, without the `B` dimension when `meta_batch_size=None`. Examples are
        cast to float32 unscaled.

    Example:

    >>> data = ClassIndexedData(np.arange(40.0)[:, None], np.arange(40) // 4)
    >>> episode = next(iter(episode_dataset(data, num_ways=5, num_shots=1, num_queries=2)))
    >>> episode["support_x"].shape, episode["query_y"].numpy().tolist()
    (TensorShape([5, 1]), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    """
    if not isinstance(data, ClassIndexedData):
        raise TypeError(
            f"Expected `data` to be a ClassIndexedData, received {type(data).__name__}. Build "
            "one with `from_arrays(x, y)` or `from_tf_dataset(dataset)`."
        )
    _check_episode_args(num_ways, num_shots, num_queries, meta_batch_size, seed, num_episodes)
    if rotations:
        _check_square_images(data.examples.shape)
    num_pool = data.num_classes * (NUM_ROTATIONS if rotations else 1)
    _check_enough_classes(num_ways, num_pool, data.num_classes if rotations else None)
    sizes = data.class_sizes
    per_class = num_shots + num_queries
    for class_id in np.flatnonzero(sizes < per_class):
        _raise_small_class(data.class_name(class_id), int(sizes[class_id]), num_shots,
                           num_queries)
    # Examples are grouped by class (no copy when they already are) and keep their dtype in
    # memory (uint8 images are 4x smaller); they become float32 after the gather.
    grouped = np.all(np.diff(data.labels) >= 0)
    examples = tf.constant(data.examples if grouped else
                           data.examples[np.argsort(data.labels, kind="stable")])
    counts = tf.constant(sizes, tf.int32)
    offsets = tf.constant(np.cumsum(sizes) - sizes, tf.int32)
    max_size = int(sizes.max())

    def sample(index: tf.Tensor) -> dict[str, tf.Tensor]:
        key = tf.stack([tf.constant(seed, tf.int64), index])
        class_key, example_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        # The top N of uniform noise is a uniformly random ordered subset: position = label.
        pool_ids = tf.math.top_k(tf.random.stateless_uniform([num_pool], class_key), num_ways)[1]
        class_ids = pool_ids // NUM_ROTATIONS if rotations else pool_ids
        # K+Q distinct positions within each class: the top of noise masked past its size.
        noise = tf.random.stateless_uniform([num_ways, max_size], example_key)
        valid = tf.range(max_size)[None] < tf.gather(counts, class_ids)[:, None]
        positions = tf.math.top_k(tf.where(valid, noise, -1.0), per_class)[1]
        rows = tf.gather(offsets, class_ids)[:, None] + positions
        blocks = tf.cast(tf.gather(examples, rows), tf.float32)
        if rotations:
            blocks = _rotate(blocks, pool_ids % NUM_ROTATIONS)
        return _episode(blocks, num_shots)

    return indexed_episodes(sample, num_episodes, meta_batch_size, first_episode)


def streaming_episode_dataset(
    class_datasets: Sequence[tf.data.Dataset],
    class_sizes: Sequence[int],
    num_ways: int,
    num_shots: int,
    num_queries: int,
    meta_batch_size: int | None = None,
    seed: int = 0,
    num_episodes: int | None = None,
    shuffle_buffer: int = 1000,
) -> tf.data.Dataset:
    """Episodes streamed from one dataset per class (Meta-Dataset style).

    Each class is read as `shuffle -> batch(K+Q) -> repeat`, reshuffled every epoch, so a
    chunk never holds the same example twice; a seeded stream draws `N` distinct classes per
    episode and `choose_from_datasets` takes the next chunk of each. Only the shuffle buffers
    are held in memory (up to `min(size, shuffle_buffer)` examples per class read so far); a
    class's last `size % (K+Q)` examples of an epoch are skipped, a different few each epoch.

    Args:
        class_datasets: one dataset of examples (tensors of one static shape and dtype) per
            class, e.g. from `class_datasets_from_files` or `labelled_class_datasets`.
        class_sizes: number of examples of each class; each needs at least `K+Q`. A class
            whose dataset has an unknown cardinality (e.g. a `filter`) is read here for up to
            `K+Q` examples, so that a short one fails now instead of hanging the pipeline.
        num_ways, num_shots, num_queries, meta_batch_size, seed, num_episodes: as in
            `episode_dataset`.
        shuffle_buffer: largest shuffle buffer of a class.

    Returns:
        A `tf.data.Dataset` of episode dicts, as `episode_dataset`.

    Example:

    >>> classes = [tf.data.Dataset.range(c * 10, c * 10 + 4) for c in range(5)]
    >>> ds = streaming_episode_dataset(classes, [4] * 5, num_ways=3, num_shots=1, num_queries=1)
    >>> next(iter(ds))["support_y"].numpy().tolist()
    [0, 1, 2]
    """
    _check_episode_args(num_ways, num_shots, num_queries, meta_batch_size, seed, num_episodes)
    check_positive_int("shuffle_buffer", shuffle_buffer)
    class_datasets, sizes = _check_class_datasets(class_datasets, class_sizes)
    _check_enough_classes(num_ways, len(sizes), None)
    for class_id, size in enumerate(sizes):
        if size < num_shots + num_queries:
            _raise_small_class(str(class_id), size, num_shots, num_queries)
    _check_unsized_classes(class_datasets, num_shots + num_queries)
    seeds = np.random.SeedSequence(seed).generate_state(len(sizes) + 1, np.uint64) >> 2
    chunks = [
        _class_chunks(dataset, min(size, shuffle_buffer), num_shots + num_queries, int(s))
        for dataset, size, s in zip(class_datasets, sizes, seeds[1:], strict=True)
    ]

    def choose(step: tf.Tensor) -> tf.Tensor:
        key = tf.stack([tf.constant(int(seeds[0]), tf.int64), step])
        noise = tf.random.stateless_uniform([len(sizes)], key)
        return tf.cast(tf.math.top_k(noise, num_ways)[1], tf.int64)

    choices = tf.data.Dataset.counter().map(choose).unbatch()
    episodes = (
        tf.data.Dataset.choose_from_datasets(chunks, choices)
        .batch(num_ways, drop_remainder=True)
        .map(lambda blocks: _episode(tf.cast(blocks, tf.float32), num_shots),
             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    )
    if num_episodes is not None:
        episodes = episodes.take(num_episodes)
    return _batch(episodes, meta_batch_size)


def class_datasets_from_files(
    class_files: Sequence[Sequence[str]], decode_fn: Callable[[tf.Tensor], tf.Tensor]
) -> list[tf.data.Dataset]:
    """One dataset per class decoding that class's files, for `streaming_episode_dataset`.

    Args:
        class_files: for every class, the paths of its example files.
        decode_fn: maps a scalar string path tensor to one example of static shape, e.g.
            `lambda p: tf.image.resize(tf.io.decode_png(tf.io.read_file(p), 1), [28, 28])`.

    Returns:
        A list of datasets; the class sizes are `[len(files) for files in class_files]`.
    """
    if isinstance(class_files, str) or not class_files or any(
        isinstance(files, str) or not files for files in class_files
    ):
        raise ValueError(
            "Received an invalid value for `class_files`, expected a non-empty list with a "
            "non-empty list of file paths per class."
        )
    datasets = [
        tf.data.Dataset.from_tensor_slices([str(path) for path in files]).map(
            decode_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        for files in class_files
    ]
    spec = datasets[0].element_spec
    if not isinstance(spec, tf.TensorSpec) or not spec.shape.is_fully_defined():
        raise ValueError(
            f"`decode_fn` must return one tensor of static shape; it returns {spec}. Resize or "
            "`tf.ensure_shape` the decoded example."
        )
    return datasets


def _episode(blocks: tf.Tensor, num_shots: int) -> dict[str, tf.Tensor]:
    """Splits `(N, K+Q, ...)` class blocks into a class-major support and query set."""
    num_ways, per_class, *shape = blocks.shape
    labels = tf.range(num_ways, dtype=tf.int32)[:, None]
    num_queries = per_class - num_shots
    return {
        SUPPORT_X: tf.reshape(blocks[:, :num_shots], [num_ways * num_shots, *shape]),
        SUPPORT_Y: tf.reshape(tf.tile(labels, [1, num_shots]), [-1]),
        QUERY_X: tf.reshape(blocks[:, num_shots:], [num_ways * num_queries, *shape]),
        QUERY_Y: tf.reshape(tf.tile(labels, [1, num_queries]), [-1]),
    }


def _rotate(blocks: tf.Tensor, turns: tf.Tensor) -> tf.Tensor:
    """Rotates the images of block `n` by `turns[n]` quarter turns, as `tf.image.rot90`."""
    num_ways, per_class, height, width, channels = blocks.shape
    # A rotation permutes the pixels, so one gather rotates every block by its own turn (4x
    # cheaper than rotating every image four times and selecting).
    pixels = tf.reshape(tf.range(height * width), [height, width, 1])
    permutations = tf.stack(
        [tf.reshape(tf.image.rot90(pixels, k), [-1]) for k in range(NUM_ROTATIONS)])
    flat = tf.reshape(blocks, [num_ways, per_class, height * width, channels])
    rotated = tf.gather(flat, tf.gather(permutations, turns), axis=2, batch_dims=1)
    return tf.reshape(rotated, blocks.shape)


def _class_chunks(dataset: tf.data.Dataset, buffer_size: int, chunk: int,
                  seed: int) -> tf.data.Dataset:
    """Infinite chunks of `chunk` distinct examples of one class, reshuffled every epoch."""

    def epoch(index: tf.Tensor) -> tf.data.Dataset:
        # As in `_common.shuffled_epochs`: seeding each epoch by its index makes every iterator
        # identical, and clearing the graph seed keeps a global seed from interfering.
        tf.compat.v1.get_default_graph().seed = None
        shuffled = dataset.shuffle(buffer_size, seed=seed + index, reshuffle_each_iteration=False)
        return shuffled.batch(chunk, drop_remainder=True)

    return tf.data.Dataset.counter().flat_map(epoch)


def indexed_episodes(
    sample: Callable[[tf.Tensor], dict], num_episodes: int | None, meta_batch_size: int | None,
    first_episode: int = 0,
) -> tf.data.Dataset:
    """Episodes `sample(i)` for `i = first_episode, ...` (int64), mapped in parallel, batched.

    A finite `num_episodes` (an evaluation set) always starts at episode 0.
    """
    if isinstance(first_episode, bool) or not isinstance(first_episode, int) \
            or first_episode < 0 or (first_episode and num_episodes is not None):
        raise ValueError(
            "Received an invalid value for `first_episode`, expected an integer >= 0, and 0 "
            f"for a finite set (num_episodes={num_episodes}). Received: "
            f"first_episode={first_episode!r}"
        )
    indices = (tf.data.Dataset.counter(start=first_episode) if num_episodes is None
               else tf.data.Dataset.range(num_episodes))
    episodes = indices.map(sample, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _batch(episodes, meta_batch_size)


def _batch(episodes: tf.data.Dataset, meta_batch_size: int | None) -> tf.data.Dataset:
    if meta_batch_size is not None:
        episodes = episodes.batch(meta_batch_size, drop_remainder=True)
    return episodes.prefetch(tf.data.AUTOTUNE)


def _check_episode_args(num_ways, num_shots, num_queries, meta_batch_size, seed,
                        num_episodes) -> None:
    for arg, value in [("num_ways", num_ways), ("num_shots", num_shots),
                       ("num_queries", num_queries)]:
        check_positive_int(arg, value)
    check_seed(seed)
    check_meta_batching(meta_batch_size, num_episodes)


def check_meta_batching(meta_batch_size: int | None, num_episodes: int | None) -> None:
    """Validates the `meta_batch_size` and `num_episodes` of an episode pipeline."""
    if meta_batch_size is not None:
        check_positive_int("meta_batch_size", meta_batch_size)
    if num_episodes is not None:
        check_positive_int("num_episodes", num_episodes)
        if meta_batch_size is not None and num_episodes % meta_batch_size:
            raise ValueError(
                f"Received num_episodes={num_episodes}, which is not a multiple of "
                f"meta_batch_size={meta_batch_size}; batches keep a static size, so "
                f"{num_episodes % meta_batch_size} episodes would be dropped. Pass a multiple."
            )


def _check_enough_classes(num_ways: int, available: int, unrotated: int | None) -> None:
    if num_ways > available:
        rotated = "" if unrotated is None else f" ({unrotated} classes x 4 rotations)"
        raise ValueError(
            f"Received num_ways={num_ways}, but only {available} classes{rotated} are available "
            f"and an episode draws its classes without replacement. Use num_ways <= {available}"
            ", or sample from more classes."
        )


def _raise_small_class(name: str, size: int, num_shots: int, num_queries: int) -> None:
    raise ValueError(
        f"Class {name} has {size} examples, fewer than num_shots + num_queries = {num_shots} + "
        f"{num_queries}, and support and query examples are distinct. Lower num_shots or "
        "num_queries, or drop the class (e.g. `data.subset(ids)`)."
    )


def _check_square_images(shape: tuple[int, ...]) -> None:
    if len(shape) != 4 or shape[1] != shape[2]:
        raise ValueError(
            "rotations=True needs square images in HWC layout, `examples` of shape "
            f"(num_examples, H, H, C). Received: examples.shape={shape}. Add a channel "
            "dimension (`x[..., None]`), crop to a square, or pass rotations=False."
        )


def _check_unsized_classes(class_datasets: list[tf.data.Dataset], per_class: int) -> None:
    """Reads up to `per_class` examples of every class whose size tf.data cannot tell.

    A class that holds fewer than `K+Q` examples never fills a chunk, and the streaming
    pipeline would wait for one forever (e.g. `labelled_class_datasets` given a label value
    that no example has).
    """
    for class_id, dataset in enumerate(class_datasets):
        if int(dataset.cardinality()) != tf.data.UNKNOWN_CARDINALITY:
            continue
        count = int(dataset.take(per_class).reduce(np.int64(0), lambda n, _: n + 1))
        if count < per_class:
            raise ValueError(
                f"The dataset of class {class_id} yields only {count} examples, fewer than "
                f"num_shots + num_queries = {per_class}, so its episodes could never be filled "
                "and the pipeline would hang. Check its label value (class_ids) and pass the "
                "true class_sizes, or drop the class."
            )


def _check_class_datasets(class_datasets, class_sizes) -> tuple[list, list[int]]:
    datasets, sizes = list(class_datasets), list(class_sizes)
    if not datasets or len(sizes) != len(datasets):
        raise ValueError(
            f"Received {len(datasets)} class datasets and {len(sizes)} class sizes, expected "
            "one size per class and at least one class."
        )
    spec = None
    for class_id, (dataset, size) in enumerate(zip(datasets, sizes, strict=True)):
        if not isinstance(dataset, tf.data.Dataset):
            raise TypeError(f"Class {class_id} is a {type(dataset).__name__}, expected a "
                            "tf.data.Dataset.")
        check_positive_int(f"class_sizes[{class_id}]", size)
        if dataset.element_spec != (spec or dataset.element_spec) or not (
            isinstance(dataset.element_spec, tf.TensorSpec)
            and dataset.element_spec.shape.is_fully_defined()
        ):
            raise ValueError(
                f"Every class must yield tensors of one static shape and dtype. Class "
                f"{class_id} yields {dataset.element_spec}, class 0 yields {spec}. Drop the "
                "labels (`.map(lambda x, y: x)`) and resize examples to one shape."
            )
        spec = dataset.element_spec
        cardinality = int(dataset.cardinality())
        if cardinality >= 0 and cardinality != size:
            raise ValueError(
                f"class_sizes[{class_id}]={size}, but the dataset of class {class_id} holds "
                f"{cardinality} examples. Pass the true sizes."
            )
    return datasets, [int(size) for size in sizes]
