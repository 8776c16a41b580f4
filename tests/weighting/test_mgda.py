import itertools

import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.weighting.mgda import mgda, min_norm_weights


def _grads(flat):
    return [[tf.constant(g[:4].reshape(2, 2), tf.float32), tf.constant(g[4:], tf.float32)]
            for g in flat]


def _flat(grads):
    return np.concatenate([np.asarray(g).reshape(-1) for g in grads])


def _exact_min_norm(flat):
    """The min-norm point of the convex hull by enumerating supports (KKT), float64."""
    gram = flat @ flat.T
    k = len(flat)
    best = None
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            s = list(support)
            system = np.block([[gram[np.ix_(s, s)], -np.ones((size, 1))],
                               [np.ones((1, size)), np.zeros((1, 1))]])
            rhs = np.r_[np.zeros(size), 1.0]
            solution = np.linalg.lstsq(system, rhs, rcond=None)[0]
            alpha = np.zeros(k)
            alpha[s] = solution[:size]
            if alpha.min() < -1e-12:
                continue
            point = alpha @ flat
            if best is None or point @ point < best @ best:
                best = point
    return best


def test_two_tasks_closed_form():
    rng = np.random.default_rng(0)
    g1, g2 = rng.normal(size=6), rng.normal(size=6)
    gamma = np.clip((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)), 0, 1)
    assert 0 < gamma < 1
    result = _flat(mgda(_grads([g1, g2])))
    np.testing.assert_allclose(result, gamma * g1 + (1 - gamma) * g2, rtol=1e-5, atol=1e-6)
    # Independent check: no point of the segment has a smaller norm.
    grid = np.linspace(0, 1, 20001)[:, None]
    assert result @ result <= np.min(np.sum((grid * g1 + (1 - grid) * g2) ** 2, 1)) + 1e-6


def test_two_tasks_clip_to_the_shorter_gradient():
    g1, g2 = np.array([1.0, 0, 0, 0, 0, 0]), np.array([2.0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(_flat(mgda(_grads([g1, g2]))), g1)
    weights = min_norm_weights(tf.constant([[1.0, 2.0], [2.0, 4.0]])).numpy()
    np.testing.assert_allclose(weights, [1.0, 0.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_and_four_tasks_match_exact_solution(seed):
    rng = np.random.default_rng(seed)
    for k in (3, 4):
        flat = rng.normal(size=(k, 6)) + 0.5  # a common component: non-zero min-norm point
        result = _flat(tf.function(mgda)(_grads(flat), tolerance=1e-9))
        exact = _exact_min_norm(flat.astype("float64"))
        assert abs(result @ result - exact @ exact) <= 1e-5 * (exact @ exact) + 1e-7
        np.testing.assert_allclose(result, exact, atol=2e-3 * np.linalg.norm(exact))


def test_weights_are_on_the_simplex_and_zero_is_reached_when_in_the_hull():
    flat = np.array([[1.0, 0, 0, 0, 0, 0], [-1.0, 1, 0, 0, 0, 0], [0, -1.0, 0, 0, 0, 0]])
    gram = tf.constant(flat @ flat.T, tf.float32)
    weights = tf.function(min_norm_weights)(gram, tolerance=1e-9).numpy()
    assert np.all(weights >= 0) and weights.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(weights, [1 / 3, 1 / 3, 1 / 3], atol=1e-3)  # the hull holds 0
    assert np.linalg.norm(weights @ flat) < 1e-3


def test_one_task_is_its_gradient():
    g = np.arange(6.0)
    np.testing.assert_allclose(_flat(mgda(_grads([g]))), g)
