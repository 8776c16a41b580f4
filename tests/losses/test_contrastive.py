"""Tests for tf_mtml.losses.contrastive: distances, checks and the margin contrastive loss."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.losses import (
    MarginContrastiveLoss,
    margin_contrastive,
    pair_distances,
    pairwise_distances,
)

RNG = np.random.default_rng(0)


def _ref_distance(a, b, metric):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if metric == "cosine":
        return 1.0 - float(a @ b) / (np.sqrt(a @ a) * np.sqrt(b @ b))
    squared = sum((x - y) ** 2 for x, y in zip(a, b, strict=True))
    return squared if metric == "squared_euclidean" else np.sqrt(squared)


@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean", "cosine"])
def test_pairwise_distances_match_a_loop(metric):
    x = RNG.normal(size=(5, 4)).astype("float32")
    expected = [[_ref_distance(x[i], x[j], metric) for j in range(5)] for i in range(5)]
    got = pairwise_distances(x, metric).numpy()
    np.testing.assert_allclose(got, expected, atol=2e-5)
    if metric != "cosine":
        np.testing.assert_array_equal(np.diag(got), 0.0)


@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean", "cosine"])
def test_pair_distances_match_a_loop(metric):
    a, b = RNG.normal(size=(2, 3, 4)).astype("float32")
    expected = [_ref_distance(a[i], b[i], metric) for i in range(3)]
    np.testing.assert_allclose(pair_distances(a, b, metric).numpy(), expected, rtol=1e-5)


def test_orthogonal_unit_vectors_have_known_distances():
    e = np.eye(3, dtype="float32")
    np.testing.assert_allclose(pairwise_distances(e, "euclidean").numpy(),
                               np.sqrt(2.0) * (1 - np.eye(3)), rtol=1e-6)
    np.testing.assert_allclose(pairwise_distances(e, "cosine").numpy(), 1 - np.eye(3), atol=1e-6)


def test_euclidean_gradient_is_finite_at_zero_distance():
    x = tf.Variable([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]])
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(pairwise_distances(x, "euclidean"))
        total += tf.reduce_sum(pair_distances(x[:2], x[1:], "euclidean"))
    grad = tape.gradient(total, x).numpy()
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0


def test_margin_contrastive_closed_form_and_label_convention():
    y = np.array([1, 1, 0, 0, 0], "float32")
    d = np.array([0.5, 2.0, 0.25, 1.0, 3.0], "float32")
    margin = 1.5
    expected = [0.25, 4.0, 1.25**2, 0.5**2, 0.0]  # similar: d^2; dissimilar: (m - d)_+^2
    np.testing.assert_allclose(margin_contrastive(y, d, margin).numpy(), expected, rtol=1e-6)


def test_margin_contrastive_on_cosine_distances_of_embeddings():
    a = np.array([[1.0, 0.0], [1.0, 0.0]], "float32")
    b = np.array([[0.0, 2.0], [-3.0, 0.0]], "float32")  # cosine distances 1 and 2
    loss = margin_contrastive([1, 0], pair_distances(a, b, "cosine"), margin=1.5).numpy()
    np.testing.assert_allclose(loss, [1.0, 0.0], atol=1e-6)


def test_margin_contrastive_loss_class_reduces_and_round_trips():
    loss = MarginContrastiveLoss(margin=2.0)
    value = loss(np.array([[1.0], [0.0]]), np.array([[1.0], [0.5]]))
    assert float(value) == pytest.approx((1.0 + 1.5**2) / 2)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, MarginContrastiveLoss) and clone.margin == 2.0


@pytest.mark.parametrize("margin", [-0.1, float("nan"), float("inf"), "1"])
def test_bad_margin_is_rejected(margin):
    with pytest.raises(ValueError, match="Received: margin="):
        margin_contrastive([1.0], [0.5], margin)
    with pytest.raises(ValueError, match="Received: margin="):
        MarginContrastiveLoss(margin=margin)


def test_bad_metric_is_rejected():
    with pytest.raises(ValueError, match="Received: metric='manhattan'"):
        pairwise_distances(np.ones((2, 2)), "manhattan")
    with pytest.raises(ValueError, match="Received: metric='dot'"):
        pair_distances(np.ones((2, 2)), np.ones((2, 2)), "dot")
