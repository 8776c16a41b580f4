import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.weighting.pcgrad import pcgrad, pcgrad_task_order

SHAPES = [(2, 3), (3,)]  # two shared variables: a kernel and a bias


def _split(vector):
    """One task's flat numpy gradient -> tensors shaped like SHAPES."""
    sizes = [int(np.prod(s)) for s in SHAPES]
    parts = np.split(np.asarray(vector, "float32"), np.cumsum(sizes)[:-1])
    return [tf.constant(p.reshape(s)) for p, s in zip(parts, SHAPES, strict=True)]


def _flat(grads):
    return np.concatenate([np.asarray(g).reshape(-1) for g in grads])


def _reference(flat, order):
    """Algorithm 1 of Yu et al. 2020 in float64 numpy, with the given task orders."""
    flat = flat.astype("float64")
    total = np.zeros(flat.shape[1])
    for i in range(len(flat)):
        g = flat[i].copy()
        for j in order[i]:
            if j != i and g @ flat[j] < 0:
                g -= (g @ flat[j]) / (flat[j] @ flat[j]) * flat[j]
        total += g
    return total


def test_two_conflicting_tasks_project_onto_each_others_normal_plane():
    rng = np.random.default_rng(0)
    g1 = rng.normal(size=9)
    g2 = -g1 + 0.5 * rng.normal(size=9)  # conflicting
    assert g1 @ g2 < 0
    result = pcgrad([_split(g1), _split(g2)], seed=(0, 0))
    assert [tuple(r.shape) for r in result] == SHAPES
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1
    np.testing.assert_allclose(_flat(result), p1 + p2, rtol=1e-4, atol=1e-5)
    # Each projected gradient is orthogonal to the other task's gradient.
    assert abs(p1 @ g2) < 1e-9 and abs(p2 @ g1) < 1e-9


def test_without_conflict_it_is_the_sum():
    g1, g2 = np.array([1.0, 2, 0, 0, 1, 0, 0, 0, 1]), np.array([0.5, 0, 1, 0, 0, 0, 1, 1, 0])
    assert g1 @ g2 > 0
    result = pcgrad([_split(g1), _split(g2)], seed=(3, 7))
    np.testing.assert_allclose(_flat(result), g1 + g2, rtol=1e-6)


def test_three_tasks_match_numpy_reference_for_the_drawn_orders():
    rng = np.random.default_rng(1)
    flat = rng.normal(size=(3, 9))
    flat[2] = -0.8 * flat[0] + 0.3 * rng.normal(size=9)
    for seed in [(0, 0), (0, 1), (5, 2)]:
        order = pcgrad_task_order(3, seed).numpy()
        assert all(sorted(row) == [0, 1, 2] for row in order)
        result = pcgrad([_split(g) for g in flat], seed=seed)
        np.testing.assert_allclose(_flat(result), _reference(flat, order), rtol=1e-4, atol=1e-5)


def test_order_is_a_deterministic_function_of_the_seed():
    a = pcgrad_task_order(5, (1, 2)).numpy()
    np.testing.assert_array_equal(a, pcgrad_task_order(5, (1, 2)).numpy())
    others = [pcgrad_task_order(5, (1, s)).numpy() for s in range(3, 8)]
    assert any(not np.array_equal(a, o) for o in others)


def test_rejects_missing_and_ragged_gradients():
    g = _split(np.ones(9))
    with pytest.raises(ValueError, match=r"no gradient \(None\) at .* \[\(1, 0\)\]"):
        pcgrad([g, [None, g[1]]], seed=(0, 0))
    with pytest.raises(ValueError, match=r"lengths \[2, 1\]"):
        pcgrad([g, g[:1]], seed=(0, 0))
