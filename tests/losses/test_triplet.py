"""Tests for tf_mtml.losses.triplet against loop references and hand-made closed forms."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.losses import TripletMarginLoss, triplet_margin

RNG = np.random.default_rng(1)
LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2])


def _distance(a, b, metric):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if metric == "cosine":
        return 1.0 - a @ b / np.sqrt((a @ a) * (b @ b))
    squared = float(np.sum((a - b) ** 2))
    return squared if metric == "squared_euclidean" else np.sqrt(squared)


def _ref_triplet(labels, x, margin, mining, metric):
    """Per-anchor losses and validity, one triplet at a time."""
    n = len(labels)
    d = [[_distance(x[i], x[j], metric) for j in range(n)] for i in range(n)]
    losses, valid = [], []
    for a in range(n):
        pos = [p for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [k for k in range(n) if labels[k] != labels[a]]
        valid.append(bool(pos and neg))
        if not (pos and neg):
            losses.append(0.0)
        elif mining == "batch_all":
            terms = [max(0.0, d[a][p] - d[a][k] + margin) for p in pos for k in neg]
            losses.append(sum(terms) / len(terms))
        elif mining == "batch_hard":
            hard_p, hard_n = max(d[a][p] for p in pos), min(d[a][k] for k in neg)
            losses.append(max(0.0, hard_p - hard_n + margin))
        else:
            terms = []
            for p in pos:
                farther = [d[a][k] for k in neg if d[a][k] > d[a][p]]
                d_n = min(farther) if farther else max(d[a][k] for k in neg)
                terms.append(max(0.0, d[a][p] - d_n + margin))
            losses.append(sum(terms) / len(terms))
    return np.array(losses), np.array(valid)


@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean", "cosine"])
def test_random_embeddings_match_the_loop_reference(mining, metric):
    x = RNG.normal(size=(8, 3)).astype("float32")
    margin = 0.5 if metric == "cosine" else 1.0
    expected, _ = _ref_triplet(LABELS, x, margin, mining, metric)
    got = triplet_margin(LABELS, x, margin=margin, mining=mining, metric=metric).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
def test_orthogonal_unit_vectors_closed_form(mining):
    # Same-class embeddings coincide, classes are orthogonal: d(a, p) = 0, d(a, n) = sqrt(2).
    x = np.repeat(np.eye(2, dtype="float32"), 2, axis=0)
    got = triplet_margin([0, 0, 1, 1], x, margin=2.0, mining=mining).numpy()
    np.testing.assert_allclose(got, np.full(4, 2.0 - np.sqrt(2.0)), rtol=1e-5)
    cosine = triplet_margin([0, 0, 1, 1], x, margin=2.0, mining=mining, metric="cosine").numpy()
    np.testing.assert_allclose(cosine, np.full(4, 1.0), atol=1e-6)  # cosine d(a, n) = 1


@pytest.mark.parametrize(
    ("negatives", "expected"),
    [
        ([4.0, 1.0], 3.0 - 4.0 + 2.0),  # semi-hard negative at 4: d_ap < d_an < d_ap + margin
        ([6.0, 1.0], 0.0),  # closest farther negative beyond the margin: loss 0
        ([1.0, 2.0], 3.0 - 2.0 + 2.0),  # none farther than the positive: the farthest one
    ],
)
def test_semi_hard_choice_and_fallback_on_a_line(negatives, expected):
    # Anchor at 0, positive at 3; distances along a line are the coordinates.
    x = np.array([[0.0], [3.0], [negatives[0]], [negatives[1]]], "float32")
    got = triplet_margin([0, 0, 1, 2], x, margin=2.0, mining="semi_hard").numpy()
    assert got[0] == pytest.approx(expected)


def test_batch_hard_uses_farthest_positive_and_closest_negative():
    x = np.array([[0.0], [1.0], [3.0], [5.0], [2.0]], "float32")
    got = triplet_margin([0, 0, 0, 1, 1], x, margin=1.0, mining="batch_hard").numpy()
    assert got[0] == pytest.approx(3.0 - 2.0 + 1.0)


@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
@pytest.mark.parametrize("labels", [[0, 0, 0], [0, 1, 2]])
def test_no_valid_triplet_gives_zero(mining, labels):
    x = RNG.normal(size=(3, 2)).astype("float32")
    np.testing.assert_array_equal(triplet_margin(labels, x, mining=mining).numpy(), 0.0)
    assert float(TripletMarginLoss(mining=mining)(labels, x)) == 0.0


@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
def test_loss_class_averages_over_valid_anchors_in_fit_graphs(mining):
    labels = np.array([0, 0, 1, 1, 1, 2])  # anchor 5 has no positive
    x = RNG.normal(size=(6, 3)).astype("float32")
    losses, valid = _ref_triplet(labels, x, 1.0, mining, "euclidean")
    loss = TripletMarginLoss(margin=1.0, mining=mining)
    assert float(loss(labels, x)) == pytest.approx(losses[valid].mean(), rel=1e-5)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Identity()])
    model.compile(loss=loss)
    assert model.evaluate(x, labels, batch_size=6, verbose=0) == pytest.approx(
        losses[valid].mean(), rel=1e-5)


@pytest.mark.parametrize("mining", ["batch_all", "batch_hard", "semi_hard"])
def test_gradients_are_finite_even_with_coincident_embeddings(mining):
    x = tf.Variable(np.concatenate([np.ones((2, 3)), RNG.normal(size=(4, 3))]).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(triplet_margin([0, 0, 1, 1, 2, 2], x, mining=mining))
    assert np.isfinite(tape.gradient(loss, x).numpy()).all()


def test_float16_embeddings_give_float32_losses():
    x = RNG.normal(size=(8, 3)).astype("float16")
    got = triplet_margin(LABELS, x, mining="batch_hard")
    expected, _ = _ref_triplet(LABELS, x.astype("float32"), 1.0, "batch_hard", "euclidean")
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-3, atol=1e-4)


def test_non_finite_embeddings_raise_eagerly_and_in_graphs():
    x = RNG.normal(size=(4, 2)).astype("float32")
    x[1, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="`embeddings` contains NaN or Inf"):
        triplet_margin([0, 0, 1, 1], x)
    x[1, 0] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="`embeddings` contains NaN or Inf"):
        tf.function(lambda e: triplet_margin([0, 0, 1, 1], e))(x)


def test_bad_arguments_are_rejected():
    x = np.ones((2, 2), "float32")
    with pytest.raises(ValueError, match="Received: margin=-1"):
        triplet_margin([0, 1], x, margin=-1.0)
    with pytest.raises(ValueError, match="Received: mining='hard'"):
        TripletMarginLoss(mining="hard")
    with pytest.raises(ValueError, match="Received: metric='l1'"):
        triplet_margin([0, 1], x, metric="l1")
    with pytest.raises(ValueError, match="one label per example"):
        triplet_margin([0, 1, 1], x)


def test_config_round_trip():
    loss = TripletMarginLoss(margin=0.3, mining="batch_all", metric="cosine")
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, TripletMarginLoss)
    assert (clone.margin, clone.mining, clone.metric) == (0.3, "batch_all", "cosine")
