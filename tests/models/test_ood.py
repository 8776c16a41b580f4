"""Tests for tf_mtml.models.ood: k-NN distance scores, calibration, distribution shift."""

import math
from statistics import NormalDist

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.models.ood import KNNOODScorer, distribution_shift_z

# Two-sided false-alarm rate of the statistical check (fixed seeds: deterministic).
Z = NormalDist().inv_cdf(1 - 1e-6 / 2)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _kth_distances(queries, references, k, leave_one_out=False):
    """Brute force: euclidean distances between unit vectors, sorted per query."""
    d = np.linalg.norm(_unit(queries)[:, None, :] - _unit(references)[None, :, :], axis=-1)
    if leave_one_out:
        d = np.where(np.eye(len(d), dtype=bool), np.inf, d)
    return np.sort(d, axis=1)[:, k - 1]


@pytest.mark.parametrize("k", [1, 3])
def test_scores_and_threshold_match_brute_force(k):
    rng = np.random.default_rng(0)
    references = rng.normal(size=(40, 5)) * rng.uniform(0.5, 3.0, size=(40, 1))
    queries = rng.normal(size=(7, 5))
    scorer = KNNOODScorer(num_references=40, num_neighbors=k, quantile=0.9).adapt(references)

    scores = np.asarray(scorer(queries.astype("float32")))
    np.testing.assert_allclose(scores, _kth_distances(queries, references, k), atol=1e-5)
    loo = _kth_distances(references, references, k, leave_one_out=True)
    np.testing.assert_allclose(float(scorer.threshold), np.quantile(loo, 0.9), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(scorer.is_outlier(queries)),
                                  scores > float(scorer.threshold))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(scorer.references), axis=1), 1.0,
                               atol=1e-6)


def test_in_distribution_is_flagged_at_the_calibrated_rate_and_shift_is_caught():
    rng = np.random.default_rng(1)
    mean = np.full(8, 2.0)
    references = rng.normal(mean, 1.0, size=(2000, 8))
    scorer = KNNOODScorer(num_references=2000, num_neighbors=10, quantile=0.95)
    scorer.adapt(references)

    fresh = rng.normal(mean, 1.0, size=(2000, 8)).astype("float32")
    rate = float(np.mean(np.asarray(scorer.is_outlier(fresh))))
    assert abs(rate - 0.05) <= Z * math.sqrt(0.05 * 0.95 / 2000)
    shifted = rng.normal(-mean, 1.0, size=(200, 8)).astype("float32")
    flagged = int(np.sum(np.asarray(scorer.is_outlier(shifted))))
    assert flagged == 200
    assert distribution_shift_z(flagged, 200, 0.95) > 10


def test_scoring_before_adapt_fails_with_a_clear_message():
    scorer = KNNOODScorer(num_references=4, num_neighbors=1)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"call `adapt\(train_embeddings\)`"):
        scorer(np.ones((2, 3), "float32"))


def test_keras_round_trip_keeps_references_and_threshold(tmp_path):
    rng = np.random.default_rng(2)
    references = rng.normal(size=(6, 3)).astype("float32")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, KNNOODScorer(6, num_neighbors=2, name="ood")(inputs))
    model.get_layer("ood").adapt(references)
    path = str(tmp_path / "ood.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    queries = rng.normal(size=(4, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(queries)), np.asarray(model(queries)),
                               atol=1e-6)
    layer = loaded.get_layer("ood")
    assert (layer.num_references, layer.num_neighbors, layer.quantile) == (6, 2, 0.95)
    assert float(layer.threshold) == pytest.approx(float(model.get_layer("ood").threshold))


@pytest.mark.parametrize("kwargs, message", [
    ({"num_references": 0}, r"`num_references`, expected a positive integer"),
    ({"num_references": 3, "num_neighbors": 3}, r"fewer neighbours than references.*"
                                                r"num_neighbors=3, num_references=3"),
    ({"num_references": 3, "quantile": 1.0}, r"`quantile`, expected a float in \(0, 1\)"),
])
def test_bad_arguments_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        KNNOODScorer(**kwargs)


def test_adapt_rejects_the_wrong_number_of_rows_or_non_finite_values():
    scorer = KNNOODScorer(num_references=3)
    with pytest.raises(ValueError, match=r"shape \(3, d\).*Received: shape=\(2, 4\)"):
        scorer.adapt(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"finite=False"):
        scorer.adapt(np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]))
    scorer.adapt(np.eye(3))
    with pytest.raises(ValueError, match=r"size 2, but this scorer was built for size 3"):
        scorer.adapt(np.ones((3, 2)))


def test_distribution_shift_z_is_the_binomial_z_statistic():
    assert distribution_shift_z(5, 100, 0.95) == pytest.approx(0.0)
    assert distribution_shift_z(15, 100, 0.95) == pytest.approx(10 / math.sqrt(100 * 0.05 * 0.95))
    assert distribution_shift_z(0, 400, 0.9) == pytest.approx(-40 / math.sqrt(400 * 0.1 * 0.9))
    with pytest.raises(ValueError, match=r"`num_flagged`, expected an integer in \[0, "
                                         r"num_inputs=10\]. Received: num_flagged=11"):
        distribution_shift_z(11, 10)
    with pytest.raises(ValueError, match=r"`num_inputs`"):
        distribution_shift_z(0, 0)
