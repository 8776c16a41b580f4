"""Sinusoid regression episodes (Finn et al. 2017, https://arxiv.org/abs/1703.03400).

Each task is `y = A sin(x - phase)` with its own amplitude and phase; an episode holds `K`
support and `Q` query points of one task, `x` uniform in `x_range`. Episode `i` is drawn with
stateless random ops keyed by `(seed, i)`, so it depends on nothing else.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tf_mtml.data._common import check_positive_int, check_seed
from tf_mtml.data.episodes import check_meta_batching, indexed_episodes
from tf_mtml.meta.base import QUERY_X, QUERY_Y, SUPPORT_X, SUPPORT_Y

AMPLITUDE, PHASE = "amplitude", "phase"


def sinusoid_episode_dataset(
    num_shots: int,
    num_queries: int,
    meta_batch_size: int | None = None,
    seed: int = 0,
    num_episodes: int | None = None,
    amplitude_range: tuple[float, float] = (0.1, 5.0),
    phase_range: tuple[float, float] = (0.0, math.pi),
    x_range: tuple[float, float] = (-5.0, 5.0),
    first_episode: int = 0,
) -> tf.data.Dataset:
    """Episodes of sinusoid regression tasks.

    Args:
        num_shots: `K`, support points per episode.
        num_queries: `Q`, query points per episode.
        meta_batch_size: `B`, episodes per element; `None` yields single episodes.
        seed: non-negative seed; the same seed gives the same episodes.
        num_episodes: number of episodes (a multiple of `B`); `None` repeats forever.
        amplitude_range: `(low, high)` of the uniform amplitude `A`, `0 <= low <= high`.
        phase_range: `(low, high)` of the uniform phase.
        x_range: `(low, high)` of the uniform inputs.
        first_episode: index of the first episode of an endless stream (O(1) resume).

    Returns:
        A `tf.data.Dataset` of dicts: `support_x`, `support_y` float32 `(B, K, 1)`, `query_x`,
        `query_y` float32 `(B, Q, 1)`, and the task's `amplitude`, `phase` float32 `(B,)`;
        without the `B` dimension when `meta_batch_size=None`.

    Example:

    >>> episode = next(iter(sinusoid_episode_dataset(num_shots=5, num_queries=10)))
    >>> episode["support_x"].shape, episode["query_y"].shape, episode["amplitude"].shape
    (TensorShape([5, 1]), TensorShape([10, 1]), TensorShape([]))
    """
    check_positive_int("num_shots", num_shots)
    check_positive_int("num_queries", num_queries)
    check_seed(seed)
    check_meta_batching(meta_batch_size, num_episodes)
    amplitudes = _check_range("amplitude_range", amplitude_range)
    if amplitudes[0] < 0:
        raise ValueError(
            "Received an invalid value for `amplitude_range`, expected non-negative "
            f"amplitudes (a negative one is a phase shift by pi). Received: {amplitude_range}"
        )
    phases = _check_range("phase_range", phase_range)
    xs = _check_range("x_range", x_range)
    num_points = num_shots + num_queries

    def sample(index: tf.Tensor) -> dict[str, tf.Tensor]:
        key = tf.stack([tf.constant(seed, tf.int64), index])
        keys = tf.unstack(tf.random.experimental.stateless_split(key, 3))
        amplitude = tf.random.stateless_uniform([], keys[0], *amplitudes)
        phase = tf.random.stateless_uniform([], keys[1], *phases)
        x = tf.random.stateless_uniform([num_points, 1], keys[2], *xs)
        y = amplitude * tf.sin(x - phase)
        return {
            SUPPORT_X: x[:num_shots], SUPPORT_Y: y[:num_shots],
            QUERY_X: x[num_shots:], QUERY_Y: y[num_shots:],
            AMPLITUDE: amplitude, PHASE: phase,
        }

    return indexed_episodes(sample, num_episodes, meta_batch_size, first_episode)


def _check_range(arg: str, value) -> tuple[float, float]:
    bounds = np.asarray(value, dtype=np.float64) if _is_pair(value) else None
    if bounds is None or not np.all(np.isfinite(bounds)) or bounds[0] > bounds[1]:
        raise ValueError(
            f"Received an invalid value for `{arg}`, expected a pair of finite numbers "
            f"(low, high) with low <= high. Received: {arg}={value!r}"
        )
    return float(bounds[0]), float(bounds[1])


def _is_pair(value) -> bool:
    try:
        return len(value) == 2 and all(
            isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in value)
    except TypeError:
        return False
