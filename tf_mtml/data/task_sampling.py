"""Task mixtures as `tf.data` pipelines: sampling probabilities and two-level task sampling.

Label convention shared with the multi-task model: labels are a dict `{task_name: (batch, ...)}`;
a missing float label is NaN and a missing integer label is -1, so the model masks them out.

Two-level sampling (level 1: which tasks a batch holds; level 2: which examples of each task)
keeps every batch shape static, which TPUs need, and is deterministic for a given seed.
"""

from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from tf_mtml.data._common import check_positive_int, check_seed, is_int, shuffled_epochs

STRATEGIES = ("uniform", "proportional", "temperature")
TASK_ID_KEY = "task_id"
FEATURES_KEY = "features"


def task_sampling_probabilities(
    sizes: Sequence[int], strategy: str = "uniform", temperature: float = 1.0
) -> np.ndarray:
    """Probability of sampling each task, from the tasks' dataset sizes.

    `"uniform"` ignores the sizes, `"proportional"` gives `p ∝ n`, and `"temperature"` gives
    `p ∝ n^(1/T)` (https://arxiv.org/abs/1907.05019): `T=1` is proportional and `T → ∞`
    tends to uniform, so `T > 1` up-samples small tasks.

    Args:
        sizes: number of examples of each task, positive integers.
        strategy: one of `"uniform"`, `"proportional"`, `"temperature"`.
        temperature: positive `T` (`math.inf` allowed); used by `"temperature"` only.

    Returns:
        float64 array of shape `(len(sizes),)` summing to 1.

    Example:

    >>> task_sampling_probabilities([100, 400], "temperature", temperature=2.0)
    array([0.33333333, 0.66666667])
    """
    _check_strategy(strategy)
    if not temperature > 0:  # Also rejects NaN.
        raise ValueError(
            "Received an invalid value for `temperature`, expected a positive number "
            f"(1 = proportional, larger = closer to uniform). Received: temperature={temperature}"
        )
    counts = _check_sizes(sizes)
    if strategy == "uniform":
        return np.full(len(counts), 1.0 / len(counts))
    exponent = 1.0 / temperature if strategy == "temperature" else 1.0
    logits = exponent * np.log(counts)
    probabilities = np.exp(logits - logits.max())
    return probabilities / probabilities.sum()


def normalize_sampling_weights(weights: Sequence[float]) -> np.ndarray:
    """Turns explicit non-negative task weights into sampling probabilities.

    Args:
        weights: one finite, non-negative weight per task, not all zero. A zero weight means
            the task is never sampled.

    Returns:
        float64 array of shape `(len(weights),)` summing to 1.

    Example:

    >>> normalize_sampling_weights([1.0, 3.0])
    array([0.25, 0.75])
    """
    values = np.asarray(weights, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            "Received an invalid value for `sampling_weights`, expected a non-empty 1-D "
            f"sequence with one weight per task. Received: sampling_weights={weights}"
        )
    if not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
        raise ValueError(
            "Received an invalid value for `sampling_weights`, expected finite, non-negative "
            "weights with a positive sum. Received: "
            f"sampling_weights={values.tolist()}. Replace negative, NaN or infinite weights "
            "and give at least one task a positive weight."
        )
    return values / values.sum()


def two_level_task_dataset(
    task_datasets: Mapping[str, tf.data.Dataset],
    *,
    tasks_per_batch: int,
    examples_per_task: int,
    strategy: str = "uniform",
    temperature: float = 1.0,
    sampling_weights: Sequence[float] | Mapping[str, float] | None = None,
    sizes: Mapping[str, int] | None = None,
    seed: int = 0,
    replace: bool = False,
    label_dtypes: Mapping[str, tf.DType] | None = None,
    shuffle_buffer: int = 1024,
) -> tf.data.Dataset:
    """Infinite dataset of batches mixing tasks with two-level sampling.

    Level 1 draws `tasks_per_batch` task ids per batch from `task_sampling_probabilities`
    (or `sampling_weights`): without replacement by default, with Gumbel-top-k
    (https://arxiv.org/abs/1903.06059), which has the distribution of
    `np.random.choice(num_tasks, tasks_per_batch, replace=False, p=p)`: the first draw
    follows `p`, later draws renormalize `p` over the tasks not yet drawn. Level 2 takes the
    next `examples_per_task` examples of each drawn task from its dataset, repeated forever
    and reshuffled every epoch.

    Args:
        task_datasets: task name -> unbatched dataset of `(features, label)`, where
            `features` is a dict of tensors with the same keys, shapes and dtypes for every
            task (a bare tensor becomes `{"features": x}`) and every shape is static. A
            dataset of unknown cardinality is read for one element, so that an empty one
            fails here instead of hanging the pipeline.
        tasks_per_batch: tasks per batch (level 1).
        examples_per_task: examples of each drawn task per batch (level 2).
        strategy: `"uniform"`, `"proportional"` or `"temperature"`.
        temperature: `T` of the `"temperature"` strategy.
        sampling_weights: explicit task weights, in mapping order or keyed by task name;
            replaces `strategy`.
        sizes: task name -> dataset size; defaults to `dataset.cardinality()`. Only the
            `"proportional"` and `"temperature"` strategies need sizes.
        seed: non-negative seed of both levels; the same seed gives the same batches.
        replace: whether a batch may hold the same task several times.
        label_dtypes: task name -> dtype the labels of that task are cast to.
        shuffle_buffer: shuffle buffer size of each task's dataset.

    Returns:
        A `tf.data.Dataset` of `(features, labels)` with batch size
        `B = tasks_per_batch * examples_per_task`: the features with an extra
        `"task_id"` int32 `(B,)` (index of the task in `task_datasets`), and `labels`
        `{task_name: (B, ...)}` holding each row's label under its own task and the missing
        marker (NaN for floats, -1 for integers) under the other tasks. Every shape is
        static.

    Example:

    >>> a = tf.data.Dataset.from_tensor_slices(({"x": tf.ones([8, 3])}, tf.ones([8])))
    >>> b = tf.data.Dataset.from_tensor_slices(({"x": tf.zeros([4, 3])}, tf.zeros([4], "int32")))
    >>> ds = two_level_task_dataset({"a": a, "b": b}, tasks_per_batch=2, examples_per_task=3)
    >>> features, labels = next(iter(ds))
    >>> features["x"].shape, features["task_id"].shape, labels["b"].dtype
    (TensorShape([6, 3]), TensorShape([6]), tf.int32)
    """
    names = _check_task_datasets(task_datasets)
    for arg, value in [
        ("tasks_per_batch", tasks_per_batch),
        ("examples_per_task", examples_per_task),
        ("shuffle_buffer", shuffle_buffer),
    ]:
        check_positive_int(arg, value)
    check_seed(seed)
    probabilities = _probabilities(
        names, task_datasets, strategy, temperature, sampling_weights, sizes
    )
    _check_enough_tasks(probabilities, tasks_per_batch, replace)
    label_specs = _label_specs(names, task_datasets, label_dtypes)
    _check_features(names, task_datasets)
    # One independent seed per task plus one for level 1; `>> 2` keeps `seed + epoch` in int64.
    seeds = np.random.SeedSequence(seed).generate_state(len(names) + 1, np.uint64) >> 2
    blocks = [
        _task_blocks(index, name, task_datasets[name], label_specs, examples_per_task,
                     shuffle_buffer, seed=int(task_seed))
        for index, (name, task_seed) in enumerate(zip(names, seeds[1:], strict=True))
    ]
    choices = _task_id_dataset(probabilities, tasks_per_batch, replace, int(seeds[0]))
    mixture = tf.data.Dataset.choose_from_datasets(blocks, choices)
    return (
        mixture.batch(tasks_per_batch, drop_remainder=True)
        .map(_merge_blocks, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def _task_id_dataset(
    probabilities: np.ndarray, tasks_per_batch: int, replace: bool, seed: int
) -> tf.data.Dataset:
    with np.errstate(divide="ignore"):
        log_p = tf.constant(np.log(probabilities), tf.float32)

    def sample(step: tf.Tensor) -> tf.Tensor:
        step_seed = tf.stack([tf.constant(seed, tf.int64), step])
        if replace:
            ids = tf.random.stateless_categorical(log_p[None], tasks_per_batch, step_seed)[0]
        else:
            # Gumbel-top-k: the k largest `log p + Gumbel noise` are k draws without replacement.
            uniform = tf.random.stateless_uniform(
                log_p.shape, step_seed, minval=np.finfo(np.float32).tiny, maxval=1.0
            )
            _, ids = tf.math.top_k(log_p - tf.math.log(-tf.math.log(uniform)), tasks_per_batch)
        return tf.cast(ids, tf.int64)

    return tf.data.Dataset.counter().map(sample).unbatch()


def _task_blocks(
    index: int,
    name: str,
    dataset: tf.data.Dataset,
    label_specs: Mapping[str, tf.TensorSpec],
    examples_per_task: int,
    shuffle_buffer: int,
    seed: int,
) -> tf.data.Dataset:
    """Infinite `(features, labels)` blocks of `examples_per_task` examples of one task."""

    def to_block(features, label):
        features = dict(_as_feature_dict(features))
        features[TASK_ID_KEY] = tf.fill([examples_per_task], tf.constant(index, tf.int32))
        labels = {
            task: tf.cast(label, spec.dtype)
            if task == name
            else tf.fill([examples_per_task, *spec.shape], _missing_marker(spec.dtype))
            for task, spec in label_specs.items()
        }
        return features, labels

    return (
        shuffled_epochs(dataset, shuffle_buffer, seed)
        .batch(examples_per_task, drop_remainder=True)
        .map(to_block)
    )


def _merge_blocks(features: dict, labels: dict) -> tuple[dict, dict]:
    def merge(x: tf.Tensor) -> tf.Tensor:
        return tf.reshape(x, [x.shape[0] * x.shape[1], *x.shape[2:]])

    return tf.nest.map_structure(merge, (features, labels))


def _missing_marker(dtype: tf.DType) -> tf.Tensor:
    return tf.constant(np.nan if dtype.is_floating else -1, dtype)


def _as_feature_dict(features):
    return features if isinstance(features, Mapping) else {FEATURES_KEY: features}


def _probabilities(
    names: list[str],
    datasets: Mapping[str, tf.data.Dataset],
    strategy: str,
    temperature: float,
    sampling_weights: Sequence[float] | Mapping[str, float] | None,
    sizes: Mapping[str, int] | None,
) -> np.ndarray:
    if sampling_weights is not None:
        if strategy != "uniform":
            raise ValueError(
                f"Received both sampling_weights={sampling_weights} and strategy={strategy!r}. "
                "Explicit weights replace the strategy: pass only one of them."
            )
        return normalize_sampling_weights(_in_task_order(names, sampling_weights, "weights"))
    _check_strategy(strategy)
    if strategy == "uniform":
        return np.full(len(names), 1.0 / len(names))
    if sizes is not None:
        counts = _in_task_order(names, sizes, "sizes")
    else:
        counts = [_cardinality(name, datasets[name], strategy) for name in names]
    return task_sampling_probabilities(counts, strategy, temperature)


def _cardinality(name: str, dataset: tf.data.Dataset, strategy: str) -> int:
    cardinality = int(dataset.cardinality())
    if cardinality < 0:
        kind = "infinite" if cardinality == tf.data.INFINITE_CARDINALITY else "unknown"
        raise ValueError(
            f"The size of task {name!r} is needed by strategy={strategy!r}, but its dataset's "
            f"cardinality is {kind}. Pass `sizes={{{name!r}: num_examples, ...}}`, or use "
            "strategy='uniform' or `sampling_weights`."
        )
    return cardinality


def _in_task_order(names: list[str], values, arg: str) -> list:
    if not isinstance(values, Mapping):
        if len(values) != len(names):
            raise ValueError(
                f"Received {len(values)} sampling {arg} for {len(names)} tasks {names}. "
                f"Pass one value per task, or a dict keyed by task name."
            )
        return list(values)
    if set(values) != set(names):
        raise ValueError(
            f"The keys of the sampling {arg} {sorted(values)} do not match the tasks "
            f"{sorted(names)}. Pass exactly one value per task name."
        )
    return [values[name] for name in names]


def _label_specs(
    names: list[str],
    datasets: Mapping[str, tf.data.Dataset],
    label_dtypes: Mapping[str, tf.DType] | None,
) -> dict[str, tf.TensorSpec]:
    label_dtypes = dict(label_dtypes or {})
    unknown = sorted(set(label_dtypes) - set(names))
    if unknown:
        raise ValueError(
            f"Received label_dtypes for unknown tasks {unknown}; the tasks are {names}."
        )
    specs = {}
    for name in names:
        spec = datasets[name].element_spec[1]
        dtype = tf.as_dtype(label_dtypes.get(name, spec.dtype))
        if not (dtype.is_floating or (dtype.is_integer and not dtype.is_unsigned)):
            raise ValueError(
                f"Task {name!r} has labels of dtype {dtype.name}, which has no missing-label "
                "marker (NaN for floats, -1 for signed integers). Pass "
                f"`label_dtypes={{{name!r}: tf.float32}}` (or tf.int32)."
            )
        specs[name] = tf.TensorSpec(spec.shape, dtype)
    return specs


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(
            f"Received an invalid value for `strategy`, expected one of {STRATEGIES}. "
            f"Received: strategy={strategy!r}"
        )


def _check_sizes(sizes: Sequence[int]) -> np.ndarray:
    bad = [i for i, size in enumerate(sizes) if not is_int(size) or size <= 0]
    if len(sizes) == 0 or bad:
        raise ValueError(
            "Received an invalid value for `sizes`, expected a non-empty sequence of positive "
            f"integers (each task's number of examples). Received: sizes={list(sizes)} "
            f"(invalid at indices {bad}). Drop empty tasks, or use strategy='uniform' or "
            "explicit sampling weights when sizes are unknown."
        )
    return np.asarray(sizes, dtype=np.float64)


def _check_enough_tasks(probabilities: np.ndarray, tasks_per_batch: int, replace: bool) -> None:
    drawable = int(np.count_nonzero(probabilities))
    if not replace and tasks_per_batch > drawable:
        raise ValueError(
            f"Received tasks_per_batch={tasks_per_batch}, but only {drawable} tasks have a "
            "non-zero sampling probability, and replace=False draws each task at most once "
            f"per batch. Use tasks_per_batch <= {drawable}, or pass replace=True."
        )


def _check_task_datasets(task_datasets: Mapping[str, tf.data.Dataset]) -> list[str]:
    if not isinstance(task_datasets, Mapping) or not task_datasets:
        raise ValueError(
            "Received an invalid value for `task_datasets`, expected a non-empty dict "
            f"{{task_name: tf.data.Dataset}}. Received: task_datasets={task_datasets!r}"
        )
    for name, dataset in task_datasets.items():
        if not isinstance(dataset, tf.data.Dataset):
            raise TypeError(
                f"Task {name!r} maps to {type(dataset).__name__}, expected a tf.data.Dataset."
            )
        spec = dataset.element_spec
        if not isinstance(spec, tuple) or len(spec) != 2:
            raise ValueError(
                f"The dataset of task {name!r} must yield `(features, label)` pairs. "
                f"Received element_spec={spec}. Map it to pairs first."
            )
        _check_static_tensor(name, "label", spec[1])
        if int(dataset.cardinality()) == 0 or (
            dataset.cardinality() == tf.data.UNKNOWN_CARDINALITY and not any(dataset.take(1))
        ):
            raise ValueError(f"The dataset of task {name!r} is empty. Drop the task or fill it.")
    return list(task_datasets)


def _check_features(names: list[str], datasets: Mapping[str, tf.data.Dataset]) -> None:
    reference_name, reference = None, None
    for name in names:
        specs = _as_feature_dict(datasets[name].element_spec[0])
        if TASK_ID_KEY in specs:
            raise ValueError(
                f"The features of task {name!r} already hold {TASK_ID_KEY!r}, which "
                "two_level_task_dataset adds itself. Rename or drop that feature."
            )
        for key, spec in specs.items():
            _check_static_tensor(name, f"feature {key!r}", spec)
        if reference is None:
            reference_name, reference = name, specs
        elif specs != reference:
            raise ValueError(
                f"Every task must have the same feature keys, shapes and dtypes. Task "
                f"{name!r} has {specs}, but task {reference_name!r} has {reference}."
            )


def _check_static_tensor(name: str, what: str, spec) -> None:
    if not isinstance(spec, tf.TensorSpec) or not spec.shape.is_fully_defined():
        raise ValueError(
            f"The {what} of task {name!r} must be a dense tensor with a static per-example "
            f"shape (batches have static shapes). Received: {spec}. Pass an unbatched dataset "
            "(`.unbatch()`), and pad or crop variable-length values to a fixed length."
        )
