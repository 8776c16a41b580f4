"""Tests for tf_mtml.losses.supcon against a loop reference and closed forms."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.losses import SupervisedContrastiveLoss, nt_xent, supervised_contrastive

RNG = np.random.default_rng(3)


def _similarity(a, b, metric):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if metric == "cosine":
        return a @ b / math.sqrt((a @ a) * (b @ b))
    return -math.sqrt(float(np.sum((a - b) ** 2)))


def _ref_supcon(labels, z, temperature, metric="cosine"):
    """Per-example `L^sup_out` (mean over its views) and whether it has a positive."""
    n, views = z.shape[0], z.shape[1]
    anchors = [(i, v) for i in range(n) for v in range(views)]
    losses, valid = np.zeros(n), np.zeros(n, bool)
    for i, v in anchors:
        others = [(j, w) for j, w in anchors if (j, w) != (i, v)]
        positives = [(j, w) for j, w in others if labels[j] == labels[i]]
        if not positives:
            continue
        log_denominator = math.log(sum(
            math.exp(_similarity(z[i, v], z[j, w], metric) / temperature) for j, w in others))
        anchor = -sum(_similarity(z[i, v], z[j, w], metric) / temperature - log_denominator
                      for j, w in positives) / len(positives)
        losses[i] += anchor / views
        valid[i] = True
    return losses, valid


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("views", [1, 2, 3])
def test_random_multi_view_embeddings_match_the_loop_reference(metric, views):
    labels = np.array([0, 1, 0, 2, 1, 0])
    z = RNG.normal(size=(6, views, 3)).astype("float32")
    expected, _ = _ref_supcon(labels, z, 0.5, metric)
    got = supervised_contrastive(labels, z, temperature=0.5, metric=metric).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_two_dimensional_embeddings_are_one_view():
    labels = np.array([0, 0, 1, 1])
    z = RNG.normal(size=(4, 3)).astype("float32")
    np.testing.assert_allclose(supervised_contrastive(labels, z).numpy(),
                               supervised_contrastive(labels, z[:, None]).numpy())


def test_same_class_examples_are_positives_closed_form():
    # One view, classes {0, 1} of two coinciding unit vectors each, orthogonal across classes:
    # L_i = -log(e^(1/t) / (e^(1/t) + 2)); with distinct labels the same-class example would
    # be a negative and the anchor would have no positive at all.
    t = 0.25
    z = np.repeat(np.eye(2, dtype="float32"), 2, axis=0)
    expected = math.log(1.0 + 2.0 * math.exp(-1.0 / t))
    np.testing.assert_allclose(supervised_contrastive([0, 0, 1, 1], z, t).numpy(), expected,
                               rtol=1e-5)


def test_several_positives_are_averaged_closed_form():
    # Class 0: 2 examples x 2 views, all e_0; class 1: one example, 2 views of e_1. A class-0
    # anchor has 3 positives (s = 1) and 2 negatives (s = 0); a class-1 anchor 1 and 4.
    t = 0.5
    z = np.array([[[1, 0], [1, 0]], [[1, 0], [1, 0]], [[0, 1], [0, 1]]], "float32")
    got = supervised_contrastive([0, 0, 1], z, t).numpy()
    first = math.log(3 * math.exp(1 / t) + 2) - 1 / t
    last = math.log(math.exp(1 / t) + 4) - 1 / t
    np.testing.assert_allclose(got, [first, first, last], rtol=1e-5)


def test_reduces_to_nt_xent_with_two_views_and_distinct_labels():
    z = RNG.normal(size=(5, 2, 4)).astype("float32")
    np.testing.assert_allclose(supervised_contrastive(np.arange(5), z, 0.3).numpy(),
                               nt_xent(z, 0.3).numpy(), rtol=1e-6)
    expected, _ = _ref_supcon(np.arange(5), z, 0.3)
    np.testing.assert_allclose(nt_xent(z, 0.3).numpy(), expected, rtol=1e-5)


def test_anchors_without_positives_are_zero_and_excluded_from_the_mean():
    labels = np.array([0, 1, 1, 2, 0])  # example 3 is alone in its class
    z = RNG.normal(size=(5, 3)).astype("float32")
    expected, valid = _ref_supcon(labels, z[:, None], 0.1)
    got = supervised_contrastive(labels, z).numpy()
    assert got[3] == 0.0 and valid.tolist() == [True, True, True, False, True]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    loss = SupervisedContrastiveLoss()
    assert float(loss(labels, z)) == pytest.approx(expected[valid].mean(), rel=1e-5)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Identity()])
    model.compile(loss=loss)
    assert model.evaluate(z, labels, batch_size=5, verbose=0) == pytest.approx(
        expected[valid].mean(), rel=1e-5)


def test_no_anchor_with_a_positive_gives_zero():
    z = RNG.normal(size=(3, 2)).astype("float32")
    np.testing.assert_array_equal(supervised_contrastive([0, 1, 2], z).numpy(), 0.0)
    assert float(SupervisedContrastiveLoss()([0, 1, 2], z)) == 0.0


def test_gradients_are_finite_and_the_loss_trains():
    labels = np.array([0, 0, 1, 1])
    z = tf.Variable(RNG.normal(size=(4, 2, 3)).astype("float32"))
    optimizer = keras.optimizers.SGD(0.5)
    first = None
    for _ in range(20):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(supervised_contrastive(labels, z, 0.5))
        grad = tape.gradient(loss, z)
        assert np.isfinite(grad.numpy()).all()
        optimizer.apply([grad], [z])
        first = float(loss) if first is None else first
    assert float(loss) < first


def test_bad_inputs_are_rejected():
    z = RNG.normal(size=(3, 2, 2)).astype("float32")
    with pytest.raises(ValueError, match="at least 2 examples.*batch_size=1"):
        supervised_contrastive([0], z[:1])
    with pytest.raises(ValueError, match="one label per example"):
        supervised_contrastive([0, 1], z)
    with pytest.raises(ValueError, match=r"\(batch, views, dim\)"):
        supervised_contrastive([0, 1, 2], np.ones(3, "float32"))
    with pytest.raises(ValueError, match="Received: temperature=0"):
        SupervisedContrastiveLoss(temperature=0)
    with pytest.raises(ValueError, match="Received: metric='dot'"):
        supervised_contrastive([0, 1, 2], z, metric="dot")
    z[2, 0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="`embeddings` contains NaN or Inf"):
        supervised_contrastive([0, 1, 2], z)


def test_config_round_trip():
    loss = SupervisedContrastiveLoss(temperature=0.07, metric="euclidean")
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, SupervisedContrastiveLoss)
    assert (clone.temperature, clone.metric) == (0.07, "euclidean")
