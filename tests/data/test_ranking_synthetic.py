"""The day-by-day ranking data: determinism, catalogue, drift and the ground-truth outcomes."""

import math

import numpy as np
import pytest

from tf_mtml.data.ranking_synthetic import (
    POSITION,
    TASK_NAMES,
    USER_FEATURES,
    VIDEO_AGE,
    VIDEO_FEATURES,
    RankingSyntheticProblem,
)

SMALL = {"num_users": 30, "requests_per_day": 40, "list_size": 6, "new_videos_per_day": 10,
         "video_lifetime_days": 3}


def _logit(p):
    return np.log(p) - np.log1p(-p)


@pytest.fixture(scope="module")
def big_day():
    """Enough impressions (60k) for the outcome frequencies to be checked within 4 SE."""
    problem = RankingSyntheticProblem(requests_per_day=3000, seed=3)
    return problem, problem.sample_day(2)


def test_same_problem_and_day_give_identical_data_and_others_differ():
    problem = RankingSyntheticProblem(**SMALL)
    first, again = problem.sample_day(4), RankingSyntheticProblem(**SMALL).sample_day(4)
    for name in (*first.features, *first.labels):
        source = first.features if name in first.features else first.labels
        other = again.features if name in again.features else again.labels
        np.testing.assert_array_equal(source[name], other[name])
    np.testing.assert_array_equal(first.video_ids, again.video_ids)
    assert not np.array_equal(problem.sample_day(5).video_ids, first.video_ids)
    reseeded = RankingSyntheticProblem(**SMALL, seed=1).sample_day(4)
    assert not np.allclose(reseeded.features[USER_FEATURES], first.features[USER_FEATURES])


def test_shapes_dtypes_and_missing_label_pattern():
    day = RankingSyntheticProblem(**SMALL).sample_day(0)
    r, size, k = 40, 6, 8
    assert day.features[USER_FEATURES].shape == (r, size, k)
    assert day.features[VIDEO_FEATURES].shape == (r, size, k + 2)
    assert day.features[VIDEO_AGE].shape == (r, size, 1)
    assert day.features[POSITION].dtype == np.int32
    np.testing.assert_array_equal(day.features[POSITION], np.tile(np.arange(size), (r, 1)))
    assert set(day.labels) == set(day.expected) == set(TASK_NAMES)
    clicked = day.labels["click"] == 1
    assert set(np.unique(day.labels["click"])) <= {0.0, 1.0}
    for name in ("watch_time", "like"):
        np.testing.assert_array_equal(np.isfinite(day.labels[name]), clicked)
    assert np.all(clicked[np.isfinite(day.labels["rating"])])
    features, labels = day.impressions()
    assert features[VIDEO_FEATURES].shape == (r * size, k + 2)
    np.testing.assert_array_equal(labels["click"], day.labels["click"].reshape(-1))
    np.testing.assert_array_equal(features[USER_FEATURES][size:2 * size],
                                  day.features[USER_FEATURES][1])


def test_candidates_come_from_the_recent_catalogue_with_their_age():
    problem = RankingSyntheticProblem(**SMALL)
    for t in (0, 4):
        day = problem.sample_day(t)
        upload_day = day.video_ids // problem.new_videos_per_day
        assert np.all((upload_day >= t - 2) & (upload_day <= t))
        np.testing.assert_array_equal(day.features[VIDEO_AGE][..., 0], t - upload_day)
        assert all(len(set(row)) == len(row) for row in day.video_ids)
    # A video keeps its features while it is a candidate; a user keeps hers every day.
    day3, day4 = problem.sample_day(3), problem.sample_day(4)
    ids3, ids4 = day3.video_ids.ravel(), day4.video_ids.ravel()
    common = np.intersect1d(ids3, ids4)
    assert common.size
    for video in common[:5]:
        a = day3.features[VIDEO_FEATURES].reshape(-1, 10)[np.flatnonzero(ids3 == video)[0]]
        b = day4.features[VIDEO_FEATURES].reshape(-1, 10)[np.flatnonzero(ids4 == video)[0]]
        np.testing.assert_array_equal(a, b)
    _, user_features = problem.users()
    np.testing.assert_array_equal(day4.features[USER_FEATURES][:, 0],
                                  user_features[day4.user_ids].astype(np.float32))


def test_drift_is_a_rotation_by_the_configured_angle_per_day():
    problem = RankingSyntheticProblem(**SMALL, preference_drift=0.3)
    rotation = problem.rotation(2)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(8), atol=1e-12)
    z = np.random.default_rng(0).standard_normal((5, 8))
    cosines = np.einsum("ik,ik->i", z, z @ rotation.T) / np.sum(z * z, axis=1)
    np.testing.assert_allclose(cosines, math.cos(0.6), atol=1e-12)
    np.testing.assert_allclose(problem.rotation(0), np.eye(8), atol=1e-12)
    np.testing.assert_allclose(problem.rotation(1) @ problem.rotation(1), rotation, atol=1e-12)
    # The affinity is the drifted taste . video latent.
    day = problem.sample_day(2)
    latents, _ = problem.users()
    pool = {v: problem.videos(v // 10)["latent"][v % 10] for v in np.unique(day.video_ids)}
    expected = [[latents[u] @ rotation.T @ pool[v] for v in row]
                for u, row in zip(day.user_ids, day.video_ids, strict=True)]
    np.testing.assert_allclose(day.affinity, expected, atol=1e-12)


def test_click_rate_grows_with_affinity(big_day):
    _, day = big_day
    affinity, clicks = day.affinity.ravel(), day.labels["click"].ravel()
    edges = np.quantile(affinity, np.linspace(0, 1, 6))
    rates = [clicks[(affinity >= lo) & (affinity <= hi)].mean()
             for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    assert np.all(np.diff(rates) > 0.02), rates
    assert abs(np.std(affinity) - 1) < 0.1  # unit variance by construction


def test_click_frequency_at_each_position_matches_the_position_bias(big_day):
    problem, day = big_day
    for position in (0, 3, 15):
        column = np.s_[:, position]
        shown = 1 / (1 + np.exp(-(_logit(day.expected["click"][column])
                                  - problem.position_bias * math.log2(1 + position))))
        observed = day.labels["click"][column]
        se = math.sqrt(np.mean(shown * (1 - shown)) / observed.size)
        assert abs(observed.mean() - shown.mean()) < 4 * se


def test_post_click_outcomes_match_their_expectations(big_day):
    problem, day = big_day
    clicked = day.labels["click"] == 1
    ratio = day.labels["watch_time"][clicked] / day.expected["watch_time"][clicked]
    assert abs(ratio.mean() - 1) < 4 * ratio.std() / math.sqrt(ratio.size)
    like = day.labels["like"][clicked]
    p = day.expected["like"][clicked]
    assert abs(like.mean() - p.mean()) < 4 * math.sqrt(np.mean(p * (1 - p)) / like.size)
    rated = np.isfinite(day.labels["rating"])
    error = day.labels["rating"][rated] - day.expected["rating"][rated]
    assert abs(error.mean()) < 4 * 0.3 / math.sqrt(error.size)
    assert abs(error.std() - 0.3) < 0.02
    share = rated.sum() / clicked.sum()
    rate = problem.rating_probability
    assert abs(share - rate) < 4 * math.sqrt(rate * (1 - rate) / clicked.sum())


def test_clickbait_raises_clicks_and_lowers_satisfaction():
    problem = RankingSyntheticProblem(**SMALL)
    day = problem.sample_day(1)
    clickbait = np.concatenate([problem.videos(u)["clickbait"] for u in (-1, 0, 1)])
    b = clickbait[day.video_ids - (-1) * problem.new_videos_per_day]
    for name, sign in (("click", 1), ("watch_time", -1), ("like", -1), ("rating", -1)):
        assert sign * np.corrcoef(b.ravel(), day.expected[name].ravel())[0, 1] > 0.1, name


def test_utility_is_the_weighted_sum_of_expectations():
    day = RankingSyntheticProblem(**SMALL).sample_day(0)
    weights = {"click": 1.0, "watch_time": 0.1, "rating": 0.5}
    expected = (day.expected["click"] + 0.1 * day.expected["watch_time"]
                + 0.5 * day.expected["rating"])
    np.testing.assert_allclose(day.utility(weights), expected)
    assert np.all(day.utility(weights) > 0)
    with pytest.raises(ValueError, match="dwell"):
        day.utility({"dwell": 1.0})
    with pytest.raises(ValueError, match="non-negative"):
        day.utility({"click": -1.0})


@pytest.mark.parametrize("name,value", [
    ("num_users", 0), ("latent_dim", 7), ("latent_dim", 0), ("list_size", 2.5),
    ("requests_per_day", -1), ("new_videos_per_day", 0), ("video_lifetime_days", 0),
    ("preference_drift", float("nan")), ("position_bias", -0.1), ("feature_noise", -1.0),
    ("rating_probability", 0.0), ("rating_probability", 1.5), ("seed", -1)])
def test_invalid_arguments_are_rejected_with_their_name(name, value):
    with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}="):
        RankingSyntheticProblem(**{**SMALL, name: value})


def test_list_larger_than_the_pool_and_negative_day_are_rejected():
    with pytest.raises(ValueError, match="candidate pool of .* 30 videos"):
        RankingSyntheticProblem(**{**SMALL, "list_size": 31})
    with pytest.raises(ValueError, match="day=-1"):
        RankingSyntheticProblem(**SMALL).sample_day(-1)
