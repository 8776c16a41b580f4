"""Day-by-day "what to watch next" impressions with a known ground truth.

A toy of the setting of Zhao et al., "Recommending What Video to Watch Next: A Multitask
Ranking System", RecSys 2019, https://doi.org/10.1145/3298689.3346997: engagement (click,
watch time) and satisfaction (like, rating) objectives that partly disagree, selection bias
from the display position, and a catalogue and audience that change from day to day.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from tf_mtml.data._common import is_int

TASK_NAMES = ("click", "watch_time", "like", "rating")
TASK_TYPES = {"click": "binary", "watch_time": "regression", "like": "binary",
              "rating": "regression"}
USER_FEATURES, VIDEO_FEATURES, VIDEO_AGE, POSITION = (
    "user_features", "video_features", "video_age", "position")
# First entropy word of each random stream: users, videos and impressions never share one.
_USER_STREAM, _VIDEO_STREAM, _DAY_STREAM = 0, 1, 2
_WATCH_LOG_STD = 0.3
_RATING_NOISE_STD = 0.3


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def weighted_sum(values: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """`sum_k weights[k] * values[k]` over the keys of `weights` (numpy or tensors)."""
    return sum(float(w) * values[name] for name, w in weights.items())


@dataclasses.dataclass(frozen=True)
class RankingDay:
    """The impressions of one day: `requests_per_day` lists of `list_size` videos.

    Attributes:
        day: The day index `t`.
        user_ids: `(R,)` the user of each request.
        video_ids: `(R, L)` the candidates in display order (`position` = column), as
            `upload_day * new_videos_per_day + index` (negative for the initial catalogue).
        features: `{name: (R, L, ...)}`: `user_features` `(R, L, k)`, `video_features`
            `(R, L, k + 2)`, `video_age` `(R, L, 1)` in days, `position` `(R, L)` int32.
        labels: `{task: (R, L)}` float32 with NaN where the label does not exist.
        expected: `{task: (R, L)}` float64 ground truth at position 0 (no position bias):
            `P(click)`, `E[watch_time | click]`, `P(like | click)`, `E[rating | click]`.
        affinity: `(R, L)` the user's drifted latent affinity for the video.
    """

    day: int
    user_ids: np.ndarray
    video_ids: np.ndarray
    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    expected: dict[str, np.ndarray]
    affinity: np.ndarray

    def impressions(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Features and labels flattened to `R * L` impressions, request-major."""
        def flat(a: np.ndarray) -> np.ndarray:
            return a.reshape(-1, *a.shape[2:])

        return ({k: flat(v) for k, v in self.features.items()},
                {k: flat(v) for k, v in self.labels.items()})

    def utility(self, weights: Mapping[str, float]) -> np.ndarray:
        """`(R, L)` ground-truth utility `sum_k weights[k] * expected[k]` (weights >= 0)."""
        unknown = sorted(set(weights) - set(TASK_NAMES))
        if unknown or not all(w >= 0 for w in weights.values()):
            raise ValueError(
                f"Received invalid utility weights {dict(weights)}, expected non-negative "
                f"weights keyed by task names from {TASK_NAMES}.")
        return weighted_sum(self.expected, weights)


@dataclasses.dataclass(frozen=True)
class RankingSyntheticProblem:
    """Users, a daily stream of new videos, and per-impression outcomes drawn from them.

    Users have latents `z_u ~ N(0, I_k / sqrt(k))`; their taste on day `t` is `R_t z_u`,
    with `R_t` a rotation by `preference_drift * t` radians in every plane of a fixed
    random basis (so `cos(z, R_t z) = cos(drift * t)`): the map from user features to
    outcomes changes every day, which is what makes training in temporal order matter.
    Every day `new_videos_per_day` videos arrive with latent `v ~ N(0, I_k / sqrt(k))`,
    quality `q ~ N(0, 1)` and clickbait `b ~ N(0, 1)`; a request on day `t` draws its
    `list_size` candidates from the videos uploaded in the last `video_lifetime_days` days
    and shows them in random order. With affinity `a = (R_t z_u) . v` (unit variance) and
    video age `g` in days, an impression at position `p` has

    - click ~ Bernoulli(sigmoid(-1.5 + 1.5 a + 0.7 b - 0.2 g - position_bias * log2(1 + p)));
    - watch_time (minutes, clicks only, else NaN) = `3 exp(0.4 a + 0.4 q - 0.3 b)` times a
      mean-one log-normal factor of log-std 0.3;
    - like (clicks only, else NaN) ~ Bernoulli(sigmoid(-1 + 1.2 a + q - 0.8 b));
    - rating (for a `rating_probability` share of the clicks, else NaN) =
      `1 + 4 sigmoid(0.8 a + 0.8 q - 0.6 b) + N(0, 0.3^2)`.

    Clickbait raises clicks and lowers satisfaction: engagement and satisfaction disagree.
    Features are noisy views of the latents: user `z_u + e`, video `[v, q, b] + e` with
    `e ~ N(0, feature_noise^2)`; the user features are those of day 0 (the drift is not
    observed). Position only affects clicks, so `expected` (at position 0) is the unbiased
    ground truth a ranking should recover.

    Args:
        num_users: Number of users.
        latent_dim: `k`, even (the drift rotates planes).
        list_size: `L`, candidates per request.
        requests_per_day: `R`, requests (lists) per day.
        new_videos_per_day: Videos uploaded every day.
        video_lifetime_days: Days a video stays a candidate; the pool holds
            `new_videos_per_day * video_lifetime_days >= list_size` videos.
        preference_drift: Rotation of every user's taste per day, in radians.
        position_bias: Click-logit penalty per `log2(1 + position)`, `>= 0`.
        feature_noise: Standard deviation of the feature noise, `>= 0`.
        rating_probability: Share of clicks that get rated, in `(0, 1]`.
        seed: Non-negative seed of users, videos and impressions.

    Example:

    >>> problem = RankingSyntheticProblem(num_users=50, requests_per_day=4, list_size=5)
    >>> day = problem.sample_day(3)
    >>> day.features["video_features"].shape, day.labels["click"].shape
    ((4, 5, 10), (4, 5))
    """

    num_users: int = 2000
    latent_dim: int = 8
    list_size: int = 20
    requests_per_day: int = 1000
    new_videos_per_day: int = 200
    video_lifetime_days: int = 5
    preference_drift: float = 0.2
    position_bias: float = 0.5
    feature_noise: float = 0.1
    rating_probability: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        def positive(name):
            value = getattr(self, name)
            return (name, is_int(value) and value > 0, "a positive integer")

        checks = [positive(n) for n in ("num_users", "list_size", "requests_per_day",
                                        "new_videos_per_day", "video_lifetime_days")]
        checks += [
            ("latent_dim", is_int(self.latent_dim) and self.latent_dim >= 2
             and self.latent_dim % 2 == 0, "an even integer >= 2"),
            ("preference_drift", abs(self.preference_drift) < math.inf, "a finite number"),
            ("position_bias", 0 <= self.position_bias < math.inf, "a finite number >= 0"),
            ("feature_noise", 0 <= self.feature_noise < math.inf, "a finite number >= 0"),
            ("rating_probability", 0 < self.rating_probability <= 1, "a number in (0, 1]"),
            ("seed", is_int(self.seed) and self.seed >= 0, "a non-negative integer"),
        ]
        for name, valid, expected in checks:
            if not valid:  # NaN fails every comparison above, so it lands here too.
                raise ValueError(
                    f"Received an invalid value for `{name}`, expected {expected}. "
                    f"Received: {name}={getattr(self, name)!r}")
        if self.pool_size < self.list_size:
            raise ValueError(
                f"Received list_size={self.list_size} larger than the candidate pool of "
                f"new_videos_per_day * video_lifetime_days = {self.pool_size} videos. Lower "
                "`list_size` or raise `new_videos_per_day` or `video_lifetime_days`.")

    @property
    def pool_size(self) -> int:
        return self.new_videos_per_day * self.video_lifetime_days

    def users(self) -> tuple[np.ndarray, np.ndarray]:
        """`(latents, features)`, float64 `(num_users, k)` each."""
        rng = np.random.default_rng([_USER_STREAM, self.seed])
        latents = rng.standard_normal((self.num_users, self.latent_dim)) * self._latent_scale
        return latents, latents + self.feature_noise * rng.standard_normal(latents.shape)

    def videos(self, upload_day: int) -> dict[str, np.ndarray]:
        """The videos uploaded on `upload_day` (any integer): latents, quality, clickbait."""
        rng = np.random.default_rng(
            [_VIDEO_STREAM, self.seed, int(upload_day < 0), abs(upload_day)])
        n = self.new_videos_per_day
        latent = rng.standard_normal((n, self.latent_dim)) * self._latent_scale
        quality, clickbait = rng.standard_normal(n), rng.standard_normal(n)
        truth = np.concatenate([latent, quality[:, None], clickbait[:, None]], axis=1)
        features = truth + self.feature_noise * rng.standard_normal(truth.shape)
        return {"latent": latent, "quality": quality, "clickbait": clickbait,
                "features": features}

    def rotation(self, day: int) -> np.ndarray:
        """`R_t`, the `(k, k)` orthogonal matrix turning day-0 tastes into day-`t` tastes."""
        rng = np.random.default_rng([_USER_STREAM, self.seed, 1])
        basis, _ = np.linalg.qr(rng.standard_normal((self.latent_dim, self.latent_dim)))
        angle = self.preference_drift * day
        block = np.array([[math.cos(angle), -math.sin(angle)],
                          [math.sin(angle), math.cos(angle)]])
        return basis @ np.kron(np.eye(self.latent_dim // 2), block) @ basis.T

    def sample_day(self, day: int) -> RankingDay:
        """The impressions of day `day >= 0`; the same problem and day give the same data."""
        if not is_int(day) or day < 0:
            raise ValueError(
                f"Received an invalid value for `day`, expected a non-negative integer. "
                f"Received: day={day!r}")
        first_upload = day - self.video_lifetime_days + 1
        pool = [self.videos(u) for u in range(first_upload, day + 1)]
        pool = {k: np.concatenate([p[k] for p in pool]) for k in pool[0]}
        pool_age = np.repeat(np.arange(self.video_lifetime_days)[::-1], self.new_videos_per_day)
        user_latents, user_features = self.users()
        rng = np.random.default_rng([_DAY_STREAM, self.seed, day])
        num_requests, size = self.requests_per_day, self.list_size
        users = rng.integers(self.num_users, size=num_requests)
        # A uniformly random ordered subset of the pool per request: its display order.
        candidates = np.argsort(rng.random((num_requests, self.pool_size)), axis=1)[:, :size]
        taste = user_latents[users] @ self.rotation(day).T
        affinity = np.einsum("rk,rlk->rl", taste, pool["latent"][candidates])
        quality, clickbait = pool["quality"][candidates], pool["clickbait"][candidates]
        age = pool_age[candidates].astype(np.float64)
        position = np.broadcast_to(np.arange(size), (num_requests, size))
        expected, labels = self._outcomes(rng, affinity, quality, clickbait, age, position)
        features = {
            USER_FEATURES: np.repeat(user_features[users][:, None], size, axis=1),
            VIDEO_FEATURES: pool["features"][candidates],
            VIDEO_AGE: age[..., None],
        }
        features = {k: v.astype(np.float32) for k, v in features.items()}
        features[POSITION] = position.astype(np.int32)
        video_ids = (first_upload * self.new_videos_per_day) + candidates
        return RankingDay(day=day, user_ids=users, video_ids=video_ids, features=features,
                          labels=labels, expected=expected, affinity=affinity)

    def _outcomes(self, rng, affinity, quality, clickbait, age, position):
        """Ground-truth expectations (position 0) and sampled labels (displayed position)."""
        click_logit = -0.5 + 1.5 * affinity + 0.7 * clickbait - 0.2 * age
        watch_mean = 3.0 * np.exp(0.4 * affinity + 0.4 * quality - 0.3 * clickbait)
        like_probability = _sigmoid(-1.0 + 1.2 * affinity + quality - 0.8 * clickbait)
        rating_mean = 1.0 + 4.0 * _sigmoid(0.8 * affinity + 0.8 * quality - 0.6 * clickbait)
        expected = {"click": _sigmoid(click_logit), "watch_time": watch_mean,
                    "like": like_probability, "rating": rating_mean}
        shape = affinity.shape
        shown_click = _sigmoid(click_logit - self.position_bias * np.log2(1.0 + position))
        click = rng.random(shape) < shown_click
        watch = watch_mean * np.exp(_WATCH_LOG_STD * rng.standard_normal(shape)
                                    - 0.5 * _WATCH_LOG_STD**2)
        like = rng.random(shape) < like_probability
        rated = click & (rng.random(shape) < self.rating_probability)
        rating = rating_mean + _RATING_NOISE_STD * rng.standard_normal(shape)
        labels = {"click": click.astype(np.float32),
                  "watch_time": np.where(click, watch, np.nan).astype(np.float32),
                  "like": np.where(click, like, np.nan).astype(np.float32),
                  "rating": np.where(rated, rating, np.nan).astype(np.float32)}
        return expected, labels

    @property
    def _latent_scale(self) -> float:
        # Components of variance 1/sqrt(k) give the affinity z . v unit variance.
        return self.latent_dim ** -0.25
