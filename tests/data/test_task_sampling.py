"""Tests for tf_mtml.data.task_sampling."""

import itertools
import math
from statistics import NormalDist

import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.data import (
    TASK_ID_KEY,
    normalize_sampling_weights,
    task_sampling_probabilities,
    two_level_task_dataset,
)

# Family-wise false-alarm rate of the frequency checks (the seeds are fixed, so a passing
# check keeps passing; the rate only fixes how wide the tolerance is).
ALPHA = 1e-6


def _task_dataset(task_index, size, label_dtype=tf.float32):
    """Example `i` of task `t` has features `[1000 t + i, i]` and label `i`."""
    index = tf.range(size)
    features = {"x": tf.cast(tf.stack([1000 * task_index + index, index], axis=1), tf.float32)}
    return tf.data.Dataset.from_tensor_slices((features, tf.cast(index, label_dtype)))


def _datasets(sizes, label_dtypes=None):
    label_dtypes = label_dtypes or [tf.float32] * len(sizes)
    return {
        f"t{i}": _task_dataset(i, size, dtype)
        for i, (size, dtype) in enumerate(zip(sizes, label_dtypes, strict=True))
    }


def _drawn_tasks(dataset, num_batches, tasks_per_batch, examples_per_task):
    """Task ids of `num_batches` batches, shape `(num_batches, tasks_per_batch)`."""
    ids = next(iter(dataset.take(num_batches).map(lambda f, _: f[TASK_ID_KEY]).batch(num_batches)))
    ids = ids.numpy().reshape(num_batches, tasks_per_batch, examples_per_task)
    # Every row of a task block carries the same id.
    np.testing.assert_array_equal(ids, np.repeat(ids[..., :1], examples_per_task, axis=-1))
    return ids[..., 0]


def _assert_binomial_counts(counts, trials, probabilities):
    """Each count is Binomial(trials, p_i): allow z standard deviations, Bonferroni-corrected."""
    probabilities = np.asarray(probabilities)
    z = NormalDist().inv_cdf(1 - ALPHA / (2 * len(probabilities)))
    tolerance = z * np.sqrt(trials * probabilities * (1 - probabilities))
    error = np.abs(np.asarray(counts) - trials * probabilities)
    assert np.all(error <= tolerance + 1e-9), (counts, trials * probabilities, tolerance)


def _inclusion_probabilities(probabilities, k):
    """P(task i in a batch) for k sequential draws without replacement, by enumeration."""
    inclusion = np.zeros(len(probabilities))
    for sequence in itertools.permutations(range(len(probabilities)), k):
        prob, remaining = 1.0, 1.0
        for task in sequence:
            prob *= probabilities[task] / remaining
            remaining -= probabilities[task]
        inclusion[list(sequence)] += prob
    return inclusion


class TestTaskSamplingProbabilities:
    def test_uniform_ignores_sizes(self):
        np.testing.assert_allclose(task_sampling_probabilities([1, 10, 100]), [1 / 3] * 3)

    def test_proportional(self):
        np.testing.assert_allclose(
            task_sampling_probabilities([1, 3, 6], "proportional"), [0.1, 0.3, 0.6]
        )

    def test_temperature_is_a_root_of_the_sizes(self):
        # T = 2: p ∝ sqrt(n) = [1, 2, 4].
        np.testing.assert_allclose(
            task_sampling_probabilities([1, 4, 16], "temperature", temperature=2.0),
            np.array([1, 2, 4]) / 7,
        )

    def test_temperature_limits(self):
        sizes = [5, 50, 500]
        np.testing.assert_allclose(
            task_sampling_probabilities(sizes, "temperature", temperature=1.0),
            task_sampling_probabilities(sizes, "proportional"),
        )
        np.testing.assert_allclose(
            task_sampling_probabilities(sizes, "temperature", temperature=math.inf), [1 / 3] * 3
        )

    def test_huge_sizes_do_not_overflow(self):
        p = task_sampling_probabilities([10**300, 10**300], "temperature", temperature=0.01)
        np.testing.assert_allclose(p, [0.5, 0.5])

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"sizes": [3, 4], "strategy": "bogus"}, "strategy='bogus'"),
            ({"sizes": [3, 0]}, r"sizes=\[3, 0\] \(invalid at indices \[1\]\)"),
            ({"sizes": [3, -2]}, r"sizes=\[3, -2\]"),
            ({"sizes": [3, 2.5]}, r"sizes=\[3, 2.5\]"),
            ({"sizes": []}, r"sizes=\[\]"),
            ({"sizes": [3], "strategy": "temperature", "temperature": 0.0}, "temperature=0.0"),
            ({"sizes": [3], "temperature": -1.0}, "temperature=-1.0"),
            ({"sizes": [3], "temperature": math.nan}, "temperature=nan"),
        ],
    )
    def test_invalid_arguments(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            task_sampling_probabilities(**kwargs)


class TestNormalizeSamplingWeights:
    def test_normalizes(self):
        np.testing.assert_allclose(normalize_sampling_weights([1.0, 0.0, 3.0]), [0.25, 0, 0.75])

    @pytest.mark.parametrize(
        "weights, match",
        [
            ([1.0, -1.0], r"sampling_weights=\[1.0, -1.0\]"),
            ([1.0, math.nan], r"sampling_weights=\[1.0, nan\]"),
            ([1.0, math.inf], r"sampling_weights=\[1.0, inf\]"),
            ([0.0, 0.0], r"sampling_weights=\[0.0, 0.0\].*positive weight"),
            ([], r"sampling_weights=\[\]"),
        ],
    )
    def test_invalid_weights(self, weights, match):
        with pytest.raises(ValueError, match=match):
            normalize_sampling_weights(weights)


class TestTwoLevelTaskDataset:
    def test_static_shapes_and_dtypes(self):
        datasets = _datasets([5, 7, 3], [tf.float32, tf.int32, tf.float32])
        ds = two_level_task_dataset(datasets, tasks_per_batch=2, examples_per_task=3)
        features_spec, labels_spec = ds.element_spec
        assert set(features_spec) == {"x", TASK_ID_KEY}
        assert set(labels_spec) == {"t0", "t1", "t2"}
        for spec in tf.nest.flatten(ds.element_spec):
            assert spec.shape.is_fully_defined(), spec
        assert features_spec["x"].shape == (6, 2)
        assert features_spec[TASK_ID_KEY] == tf.TensorSpec((6,), tf.int32)
        assert labels_spec["t1"] == tf.TensorSpec((6,), tf.int32)
        assert labels_spec["t0"] == tf.TensorSpec((6,), tf.float32)

    def test_labels_are_masked_outside_their_task(self):
        datasets = _datasets([5, 7, 3], [tf.float32, tf.int32, tf.float32])
        names = list(datasets)
        ds = two_level_task_dataset(datasets, tasks_per_batch=2, examples_per_task=3, seed=4)
        for features, labels in ds.take(20):
            task_ids = features[TASK_ID_KEY].numpy()
            x = features["x"].numpy()
            # Features come from the dataset of the row's task.
            np.testing.assert_array_equal(x[:, 0] // 1000, task_ids)
            for index, name in enumerate(names):
                label = labels[name].numpy()
                own = task_ids == index
                np.testing.assert_array_equal(label[own], x[own, 1])
                if label.dtype.kind == "f":
                    assert np.all(np.isnan(label[~own]))
                else:
                    np.testing.assert_array_equal(label[~own], -1)

    def test_no_repeated_task_without_replacement(self):
        ds = two_level_task_dataset(_datasets([3, 3, 3, 3]), tasks_per_batch=3, examples_per_task=2)
        drawn = _drawn_tasks(ds, 300, 3, 2)
        assert all(len(set(batch)) == 3 for batch in drawn)

    def test_replacement_repeats_tasks(self):
        ds = two_level_task_dataset(
            _datasets([3, 3]), tasks_per_batch=4, examples_per_task=1, replace=True
        )
        drawn = _drawn_tasks(ds, 50, 4, 1)
        # Without replacement 4 draws from 2 tasks would be impossible.
        assert any(len(set(batch)) < 4 for batch in drawn)

    @pytest.mark.parametrize(
        "strategy, temperature", [("uniform", 1.0), ("proportional", 1.0), ("temperature", 2.0)]
    )
    def test_frequencies_with_replacement(self, strategy, temperature):
        sizes, num_batches, tasks_per_batch = [1, 4, 16], 1500, 2
        ds = two_level_task_dataset(
            _datasets(sizes), tasks_per_batch=tasks_per_batch, examples_per_task=1,
            strategy=strategy, temperature=temperature, replace=True, seed=1,
        )
        drawn = _drawn_tasks(ds, num_batches, tasks_per_batch, 1)
        counts = np.bincount(drawn.ravel(), minlength=3)
        expected = task_sampling_probabilities(sizes, strategy, temperature)
        _assert_binomial_counts(counts, num_batches * tasks_per_batch, expected)

    def test_frequencies_without_replacement(self):
        sizes, num_batches = [1, 2, 3, 4], 1500
        ds = two_level_task_dataset(
            _datasets(sizes), tasks_per_batch=2, examples_per_task=1,
            strategy="proportional", seed=2,
        )
        drawn = _drawn_tasks(ds, num_batches, 2, 1)
        # A task is in a batch at most once, so its batch count is Binomial(num_batches, π_i).
        counts = np.bincount(drawn.ravel(), minlength=4)
        inclusion = _inclusion_probabilities(np.array(sizes) / 10, 2)
        _assert_binomial_counts(counts, num_batches, inclusion)
        # The first draw follows p itself.
        first = np.bincount(drawn[:, 0], minlength=4)
        _assert_binomial_counts(first, num_batches, np.array(sizes) / 10)

    def test_sampling_weights_keyed_by_name_and_zero_weight(self):
        ds = two_level_task_dataset(
            _datasets([2, 2, 2]), tasks_per_batch=1, examples_per_task=1,
            sampling_weights={"t2": 3.0, "t0": 1.0, "t1": 0.0}, seed=3,
        )
        counts = np.bincount(_drawn_tasks(ds, 800, 1, 1).ravel(), minlength=3)
        _assert_binomial_counts(counts, 800, [0.25, 0.0, 0.75])

    def test_sizes_override_cardinality(self):
        datasets = {name: ds.filter(lambda f, y: True) for name, ds in _datasets([4, 4]).items()}
        ds = two_level_task_dataset(
            datasets, tasks_per_batch=1, examples_per_task=1, strategy="proportional",
            sizes={"t0": 1, "t1": 9}, seed=5,
        )
        counts = np.bincount(_drawn_tasks(ds, 800, 1, 1).ravel(), minlength=2)
        _assert_binomial_counts(counts, 800, [0.1, 0.9])

    def test_each_epoch_is_a_new_permutation(self):
        ds = two_level_task_dataset(
            {"only": _task_dataset(0, 6)}, tasks_per_batch=1, examples_per_task=3, seed=7
        )
        labels = np.concatenate([y["only"].numpy() for _, y in ds.take(10)]).reshape(5, 6)
        for epoch in labels:
            np.testing.assert_array_equal(np.sort(epoch), np.arange(6))
        assert len({tuple(epoch) for epoch in labels}) > 1

    def test_deterministic_for_a_seed(self):
        def batches(ds):
            return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds.take(8)]

        def make(seed):
            return two_level_task_dataset(
                _datasets([5, 6, 7]), tasks_per_batch=2, examples_per_task=2, seed=seed
            )

        ds = make(11)
        first = batches(ds)
        for other in (batches(ds), batches(make(11))):
            np.testing.assert_equal(other, first)
        different = batches(make(12))
        assert not all(
            np.array_equal(a[0]["x"], b[0]["x"]) for a, b in zip(first, different, strict=True)
        )

    def test_bare_tensor_features_and_label_dtype_cast(self):
        datasets = {
            "a": tf.data.Dataset.from_tensor_slices((tf.ones([4, 3]), tf.range(4))),
            "b": tf.data.Dataset.from_tensor_slices((tf.zeros([4, 3]), tf.range(4))),
        }
        ds = two_level_task_dataset(
            datasets, tasks_per_batch=2, examples_per_task=2, label_dtypes={"a": tf.float32}
        )
        features_spec, labels_spec = ds.element_spec
        assert set(features_spec) == {"features", TASK_ID_KEY}
        assert labels_spec["a"].dtype == tf.float32
        assert labels_spec["b"].dtype == tf.int32
        features, labels = next(iter(ds))
        is_b = features[TASK_ID_KEY].numpy() == 1
        assert np.all(np.isnan(labels["a"].numpy()[is_b]))

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"tasks_per_batch": 4}, r"tasks_per_batch=4.*only 3 tasks.*replace=True"),
            ({"tasks_per_batch": 0}, "tasks_per_batch=0"),
            ({"examples_per_task": -1}, "examples_per_task=-1"),
            ({"shuffle_buffer": 0}, "shuffle_buffer=0"),
            ({"seed": -3}, "seed=-3"),
            ({"strategy": "sqrt"}, "strategy='sqrt'"),
            ({"sampling_weights": [1, 1]}, r"2 sampling weights for 3 tasks"),
            ({"sampling_weights": {"t0": 1, "zz": 1, "t2": 1}}, r"\['t0', 't2', 'zz'\]"),
            ({"sampling_weights": [1, -1, 1]}, r"sampling_weights=\[1.0, -1.0, 1.0\]"),
            ({"sampling_weights": [1, 0, 0], "tasks_per_batch": 2}, "only 1 tasks"),
            ({"sampling_weights": [1, 1, 1], "strategy": "proportional"}, "only one of them"),
            ({"label_dtypes": {"nope": tf.float32}}, r"unknown tasks \['nope'\]"),
            ({"label_dtypes": {"t1": tf.bool}}, r"'t1'.*dtype bool"),
            ({"label_dtypes": {"t1": tf.uint8}}, r"'t1'.*dtype uint8"),
            ({"strategy": "proportional", "sizes": {"t0": 1, "t1": 0, "t2": 1}}, r"\[1, 0, 1\]"),
        ],
    )
    def test_invalid_arguments(self, kwargs, match):
        kwargs = {"tasks_per_batch": 2, "examples_per_task": 2, **kwargs}
        with pytest.raises(ValueError, match=match):
            two_level_task_dataset(_datasets([3, 3, 3]), **kwargs)

    def test_unknown_size_needs_sizes(self):
        datasets = _datasets([3, 3])
        datasets["t1"] = datasets["t1"].filter(lambda f, y: True)
        with pytest.raises(ValueError, match=r"task 't1'.*unknown.*sizes="):
            two_level_task_dataset(
                datasets, tasks_per_batch=1, examples_per_task=1, strategy="proportional"
            )

    @pytest.mark.parametrize(
        "make_bad, match",
        [
            (lambda: _task_dataset(1, 0), "task 'bad' is empty"),
            (lambda: _task_dataset(1, 3).filter(lambda f, y: False), "task 'bad' is empty"),
            (lambda: _task_dataset(1, 3).batch(2), r"of task 'bad'.*static.*unbatch"),
            (lambda: _task_dataset(1, 3).map(lambda f, y: f), r"'bad' must yield `\(features, "),
            (
                lambda: _task_dataset(1, 3).map(lambda f, y: ({"x": f["x"][:1]}, y)),
                r"same feature keys, shapes and dtypes. Task 'bad'",
            ),
            (
                lambda: _task_dataset(1, 3).map(lambda f, y: ({**f, TASK_ID_KEY: 0}, y)),
                "task 'bad' already hold 'task_id'",
            ),
        ],
    )
    def test_invalid_task_datasets(self, make_bad, match):
        datasets = {"good": _task_dataset(0, 3), "bad": make_bad()}
        with pytest.raises(ValueError, match=match):
            two_level_task_dataset(datasets, tasks_per_batch=1, examples_per_task=1)

    def test_empty_mapping(self):
        with pytest.raises(ValueError, match="task_datasets={}"):
            two_level_task_dataset({}, tasks_per_batch=1, examples_per_task=1)
