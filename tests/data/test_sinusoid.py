"""Tests for tf_mtml.data.sinusoid."""

import math
from statistics import NormalDist

import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.data import sinusoid_episode_dataset
from tf_mtml.meta.base import QUERY_X, QUERY_Y, SUPPORT_X, SUPPORT_Y


def _as_numpy(dataset, num):
    return [tf.nest.map_structure(lambda t: t.numpy(), e) for e in dataset.take(num)]


def test_targets_are_the_task_sinusoid_within_ranges():
    ds = sinusoid_episode_dataset(num_shots=5, num_queries=7, seed=3,
                                  amplitude_range=(0.5, 2.0), phase_range=(-1.0, 1.0),
                                  x_range=(0.0, 3.0))
    for episode in _as_numpy(ds, 50):
        amplitude, phase = float(episode["amplitude"]), float(episode["phase"])
        assert 0.5 <= amplitude <= 2.0 and -1.0 <= phase <= 1.0
        for x, y in [(SUPPORT_X, SUPPORT_Y), (QUERY_X, QUERY_Y)]:
            inputs = episode[x].astype(np.float64)
            assert np.all((inputs >= 0.0) & (inputs <= 3.0))
            np.testing.assert_allclose(episode[y], amplitude * np.sin(inputs - phase),
                                       rtol=1e-5, atol=1e-5)


def test_static_shapes_and_batching_keeps_each_episode():
    batched = sinusoid_episode_dataset(4, 6, meta_batch_size=3, seed=1)
    assert batched.element_spec == {
        SUPPORT_X: tf.TensorSpec([3, 4, 1], tf.float32),
        SUPPORT_Y: tf.TensorSpec([3, 4, 1], tf.float32),
        QUERY_X: tf.TensorSpec([3, 6, 1], tf.float32),
        QUERY_Y: tf.TensorSpec([3, 6, 1], tf.float32),
        "amplitude": tf.TensorSpec([3], tf.float32),
        "phase": tf.TensorSpec([3], tf.float32),
    }
    single = _as_numpy(sinusoid_episode_dataset(4, 6, seed=1), 6)
    for b, batch in enumerate(_as_numpy(batched, 2)):
        for i in range(3):
            for key in batch:
                np.testing.assert_array_equal(batch[key][i], single[3 * b + i][key])


def test_seeds_and_finite_episodes():
    first = _as_numpy(sinusoid_episode_dataset(2, 2, seed=5), 5)
    np.testing.assert_equal(_as_numpy(sinusoid_episode_dataset(2, 2, seed=5), 5), first)
    other = _as_numpy(sinusoid_episode_dataset(2, 2, seed=6), 5)
    assert not any(a["amplitude"] == b["amplitude"] for a, b in zip(first, other, strict=True))
    finite = sinusoid_episode_dataset(2, 2, meta_batch_size=2, num_episodes=4, seed=5)
    assert len(_as_numpy(finite, 100)) == 2


def test_default_task_distribution_is_uniform():
    """Finn et al. 2017: A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5]."""
    n = 2000
    batch = next(iter(sinusoid_episode_dataset(10, 10, meta_batch_size=n)))
    z = NormalDist().inv_cdf(1 - 1e-7)
    for values, (low, high) in [(batch["amplitude"].numpy(), (0.1, 5.0)),
                                (batch["phase"].numpy(), (0.0, math.pi)),
                                (batch[SUPPORT_X].numpy().ravel(), (-5.0, 5.0))]:
        assert low <= values.min() and values.max() <= high
        # The mean of n uniforms is within z standard errors of the midpoint.
        standard_error = (high - low) / math.sqrt(12 * len(values))
        assert abs(values.mean() - (low + high) / 2) <= z * standard_error


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"amplitude_range": (2.0, 1.0)}, r"amplitude_range=\(2.0, 1.0\)"),
        ({"amplitude_range": (-1.0, 1.0)}, "non-negative amplitudes"),
        ({"phase_range": (0.0, float("nan"))}, "phase_range=.*nan"),
        ({"x_range": (0.0, 1.0, 2.0)}, "pair of finite numbers"),
        ({"x_range": "ab"}, "x_range='ab'"),
        ({"num_shots": 0}, "num_shots=0"),
        ({"num_queries": -2}, "num_queries=-2"),
        ({"meta_batch_size": 2, "num_episodes": 3}, "not a multiple"),
        ({"seed": -1}, "seed=-1"),
    ],
)
def test_invalid_arguments(kwargs, match):
    kwargs = {"num_shots": 2, "num_queries": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        sinusoid_episode_dataset(**kwargs)
