import numpy as np
import pytest
import tensorflow as tf
from scipy import optimize

from tf_mtml.weighting.cagrad import cagrad, cagrad_weights


def _grads(flat):
    return [[tf.constant(g[:4].reshape(2, 2), tf.float32), tf.constant(g[4:], tf.float32)]
            for g in flat]


def _flat(grads):
    return np.concatenate([np.asarray(g).reshape(-1) for g in grads])


def _dual(w, flat, c):
    """F(w) = g_w . g0 + c |g0| |g_w| in float64 (eq. 6 of Liu et al. 2021)."""
    g0 = flat.mean(0)
    gw = w @ flat
    return gw @ g0 + c * np.linalg.norm(g0) * np.linalg.norm(gw)


def _update(w, flat, c):
    """The official update `(g0 + c |g0| g_w / |g_w|) / (1 + c^2)`."""
    g0, gw = flat.mean(0), w @ flat
    return (g0 + c * np.linalg.norm(g0) * gw / np.linalg.norm(gw)) / (1 + c * c)


@pytest.mark.parametrize("k", [2, 3])
def test_c_zero_is_the_average_gradient(k):
    flat = np.random.default_rng(k).normal(size=(k, 6))
    np.testing.assert_allclose(_flat(cagrad(_grads(flat), c=0.0)), flat.mean(0), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_two_tasks_closed_form_matches_a_bounded_1d_solve(seed):
    rng = np.random.default_rng(seed)
    flat = rng.normal(size=(2, 6))
    flat[1] = -0.7 * flat[0] + 0.6 * rng.normal(size=6)  # conflicting tasks
    c = 0.5
    reference = optimize.minimize_scalar(lambda x: _dual(np.array([x, 1 - x]), flat, c),
                                         bounds=(0, 1), method="bounded",
                                         options={"xatol": 1e-10})
    weights = cagrad_weights(tf.constant(flat @ flat.T, tf.float32), c).numpy()
    assert _dual(weights, flat, c) <= reference.fun + 1e-5
    np.testing.assert_allclose(weights[0], reference.x, atol=1e-3)
    w = np.array([reference.x, 1 - reference.x])
    np.testing.assert_allclose(_flat(cagrad(_grads(flat), c=c)), _update(w, flat, c),
                               rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_three_tasks_match_slsqp_like_the_official_code(seed):
    rng = np.random.default_rng(10 + seed)
    flat = rng.normal(size=(3, 6))
    c = 0.4
    reference = optimize.minimize(
        lambda w: _dual(w, flat, c), np.ones(3) / 3, bounds=[(0, 1)] * 3, method="SLSQP",
        constraints={"type": "eq", "fun": lambda w: 1 - w.sum()}, options={"ftol": 1e-12})
    weights = tf.function(cagrad_weights)(tf.constant(flat @ flat.T, tf.float32), c,
                                          tolerance=1e-9).numpy()
    assert np.all(weights >= 0) and weights.sum() == pytest.approx(1.0, abs=1e-5)
    assert _dual(weights, flat, c) <= reference.fun + 1e-5
    result = _flat(tf.function(cagrad)(_grads(flat), c=c, tolerance=1e-9))
    np.testing.assert_allclose(result, _update(reference.x, flat, c), atol=1e-3)


def test_identical_gradients_are_scaled_by_one_plus_c_over_one_plus_c_squared():
    g = np.arange(1.0, 7.0)
    c = 0.5
    np.testing.assert_allclose(_flat(cagrad(_grads([g, g]), c=c)), g * (1 + c) / (1 + c * c),
                               rtol=1e-5)


def test_rejects_negative_c():
    with pytest.raises(ValueError, match=r"`c`.*>= 0. Received: c=-0.1"):
        cagrad(_grads(np.ones((2, 6))), c=-0.1)
