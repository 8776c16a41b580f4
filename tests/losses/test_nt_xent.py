"""Tests for tf_mtml.losses.nt_xent against a loop reference and closed forms."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.losses import NTXentLoss, nt_xent

RNG = np.random.default_rng(2)


def _similarity(a, b, metric):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if metric == "cosine":
        return a @ b / math.sqrt((a @ a) * (b @ b))
    squared = float(np.sum((a - b) ** 2))
    return -(squared if metric == "squared_euclidean" else math.sqrt(squared))


def _ref_anchor_losses(z, temperature, metric="cosine"):
    """`l(i, partner(i))` for the 2N anchors, view 1 first, one anchor at a time."""
    n = z.shape[0]
    u = [z[i, 0] for i in range(n)] + [z[i, 1] for i in range(n)]
    losses = []
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denominator = sum(math.exp(_similarity(u[i], u[k], metric) / temperature)
                          for k in range(2 * n) if k != i)
        losses.append(-math.log(math.exp(_similarity(u[i], u[j], metric) / temperature)
                                / denominator))
    return np.array(losses)


def _ref_nt_xent(z, temperature, metric="cosine"):
    anchors = _ref_anchor_losses(z, temperature, metric)
    n = z.shape[0]
    return np.array([(anchors[i] + anchors[i + n]) / 2 for i in range(n)])


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "squared_euclidean"])
def test_random_embeddings_match_the_loop_reference(metric):
    z = RNG.normal(size=(4, 2, 3)).astype("float32")
    got = nt_xent(z, temperature=0.5, metric=metric).numpy()
    np.testing.assert_allclose(got, _ref_nt_xent(z, 0.5, metric), rtol=1e-5)


@pytest.mark.parametrize("n", [2, 3, 5])
def test_orthogonal_views_count_exactly_2n_minus_2_negatives(n):
    # Both views of example i are e_i: s(positive) = 1, s(each of the 2N-2 negatives) = 0, so
    # l = -log(e^(1/t) / (e^(1/t) + 2N - 2)); the anchor itself is not in the denominator.
    t = 0.2
    z = np.repeat(np.eye(n, dtype="float32")[:, None, :], 2, axis=1)
    expected = math.log(1.0 + (2 * n - 2) * math.exp(-1.0 / t))
    np.testing.assert_allclose(nt_xent(z, temperature=t).numpy(), expected, rtol=1e-5)


def test_a_negative_moved_onto_the_anchor_enters_the_denominator():
    n, t = 3, 0.5
    z = np.repeat(np.eye(n, dtype="float32")[:, None, :], 2, axis=1)
    z[1, 0] = z[0, 0]  # a negative of example 0 now has similarity 1 with both its views
    expected = math.log(2.0 + (2 * n - 3) * math.exp(-1.0 / t))
    assert nt_xent(z, temperature=t).numpy()[0] == pytest.approx(expected, rel=1e-5)


def test_each_anchor_depends_on_its_positive_and_all_other_embeddings():
    z = tf.constant(RNG.normal(size=(3, 2, 4)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(z)
        losses = nt_xent(z, temperature=0.5)
    jacobian = tape.jacobian(losses, z).numpy()  # (N, N, 2, dim)
    assert (np.abs(jacobian).sum(axis=-1) > 1e-6).all()


def test_gradient_matches_float64_finite_differences():
    z = RNG.normal(size=(3, 2, 3))
    var = tf.Variable(z.astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(nt_xent(var, temperature=0.5))
    grad = tape.gradient(loss, var).numpy()
    numeric = np.zeros_like(z)
    eps = 1e-6
    for index in np.ndindex(z.shape):
        step = np.zeros_like(z)
        step[index] = eps
        numeric[index] = (_ref_nt_xent(z + step, 0.5).mean()
                          - _ref_nt_xent(z - step, 0.5).mean()) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=1e-4)


def test_cosine_loss_ignores_the_embedding_norm():
    z = RNG.normal(size=(4, 2, 3)).astype("float32")
    scale = np.array([1.0, 5.0, 0.1, 2.0], "float32")[:, None, None]
    np.testing.assert_allclose(nt_xent(z * scale).numpy(), nt_xent(z).numpy(), rtol=1e-4)


def test_loss_class_mean_and_config_round_trip():
    z = RNG.normal(size=(4, 2, 3)).astype("float32")
    loss = NTXentLoss(temperature=0.3, metric="euclidean")
    assert float(loss(np.zeros(4), z)) == pytest.approx(
        _ref_nt_xent(z, 0.3, "euclidean").mean(), rel=1e-5)
    clone = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(clone, NTXentLoss)
    assert (clone.temperature, clone.metric) == (0.3, "euclidean")


def test_a_single_example_is_rejected_statically_and_at_run_time():
    z = RNG.normal(size=(1, 2, 3)).astype("float32")
    with pytest.raises(ValueError, match="at least 2 examples.*batch_size=1"):
        nt_xent(z)
    dynamic = tf.function(nt_xent, input_signature=[tf.TensorSpec((None, 2, 3), tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="NT-Xent needs a batch of at least"):
        dynamic(z)


def test_non_finite_embeddings_raise():
    z = RNG.normal(size=(2, 2, 3)).astype("float32")
    z[0, 1, 2] = -np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="`embeddings` contains NaN or Inf"):
        nt_xent(z)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_is_rejected(temperature):
    with pytest.raises(ValueError, match="Received: temperature="):
        nt_xent(np.ones((2, 2, 3), "float32"), temperature=temperature)
    with pytest.raises(ValueError, match="Received: temperature="):
        NTXentLoss(temperature=temperature)


@pytest.mark.parametrize("shape", [(4, 3), (4, 3, 3)])
def test_embeddings_must_be_two_stacked_views(shape):
    with pytest.raises(ValueError, match=r"\(batch, 2, dim\)"):
        nt_xent(np.ones(shape, "float32"))
