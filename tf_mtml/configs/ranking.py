"""Config of the ranking task family: day-by-day synthetic impressions, MMoE, ranking score."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from tf_mtml.configs.base import Config, ConfigError
from tf_mtml.data.ranking_synthetic import TASK_TYPES, RankingSyntheticProblem
from tf_mtml.models.task_spec import as_task_specs
from tf_mtml.weighting.factory import WEIGHTINGS


@dataclasses.dataclass
class RankingDataConfig(Config):
    """The generated days (`RankingSyntheticProblem` fields) and the batch size.

    The schedule trains on days `0 .. num_days - 1` and evaluates each on the next day, so
    days `0 .. num_days` are generated.
    """

    num_days: int = 8
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
    problem_seed: int = 0
    global_batch_size: int = 256

    def problem(self) -> RankingSyntheticProblem:
        return RankingSyntheticProblem(
            num_users=self.num_users, latent_dim=self.latent_dim, list_size=self.list_size,
            requests_per_day=self.requests_per_day, new_videos_per_day=self.new_videos_per_day,
            video_lifetime_days=self.video_lifetime_days,
            preference_drift=self.preference_drift, position_bias=self.position_bias,
            feature_noise=self.feature_noise, rating_probability=self.rating_probability,
            seed=self.problem_seed)

    def validate(self) -> None:
        for name in ("num_days", "global_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"`task.data.{name}` must be >= 1. Received: {getattr(self, name)}")
        try:
            self.problem()
        except ValueError as e:
            raise ConfigError(f"Invalid `task.data`: {e}") from e
        impressions = self.requests_per_day * self.list_size
        if impressions < self.global_batch_size:
            raise ConfigError(
                f"A day holds requests_per_day * list_size = {impressions} impressions, fewer "
                f"than `task.data.global_batch_size={self.global_batch_size}`. Raise the first "
                "or lower the second.")


def _default_score_weights() -> dict[str, float]:
    # Roughly equal spread per term: watch time is in minutes (mean ~5), ratings in 1..5.
    return {"click": 1.0, "watch_time": 0.1, "like": 1.0, "rating": 0.2}


@dataclasses.dataclass
class RankingModelConfig(Config):
    """MMoE with expert dropout, towers, a position shallow tower and the ranking score.

    `score_weights` defines the ranking score `sum_k w_k * prediction_k` (tasks without a
    weight count 0); the ground-truth relevance of the NDCG is the same sum over the true
    expectations. `position_bias_tasks` get the shallow tower's position logit added to
    their raw output in training; serving predicts at position 0 (Zhao et al. 2019, 4.3).
    """

    num_experts: int = 8
    expert_units: tuple[int, ...] = (64,)
    expert_dropout: float = 0.1
    tower_units: tuple[int, ...] = (32,)
    weighting: str = "static"
    position_bias_tasks: tuple[str, ...] = ("click",)
    score_weights: dict[str, float] = dataclasses.field(default_factory=_default_score_weights)

    def validate(self) -> None:
        if self.num_experts < 1:
            raise ConfigError(
                "Received an invalid value for `task.model.num_experts`, expected a positive "
                f"integer. Received: num_experts={self.num_experts}")
        if not 0 <= self.expert_dropout < 1:
            raise ConfigError(
                "`task.model.expert_dropout` must be in [0, 1) (1 would drop every expert). "
                f"Received: expert_dropout={self.expert_dropout}")
        if not self.expert_units or min(self.expert_units + self.tower_units) < 1:
            raise ConfigError("`task.model.expert_units` / `tower_units` must be positive layer "
                              f"widths. Received: {self.expert_units} / {self.tower_units}")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(
                f"Unknown `task.model.weighting={self.weighting}`; expected one of {WEIGHTINGS}.")
        bad = {k: v for k, v in self.score_weights.items()
               if isinstance(v, bool) or not isinstance(v, int | float)
               or not 0 <= v < math.inf}
        if bad or not any(v > 0 for v in self.score_weights.values()):
            raise ConfigError(
                "`task.model.score_weights` must map task names to finite weights >= 0, at "
                f"least one > 0 (the NDCG relevance must be >= 0). Received: {self.score_weights}")


def _default_tasks() -> tuple[dict[str, Any], ...]:
    return ({"name": "click", "type": "binary"},
            {"name": "watch_time", "type": "regression", "standardize": True},
            {"name": "like", "type": "binary"},
            {"name": "rating", "type": "regression", "standardize": True})


@dataclasses.dataclass
class RankingConfig(Config):
    """A ranking experiment: generated days, network, task specs and NDCG cut-offs.

    `tasks` are `TaskSpec` fields for any of the generated objectives `click` (binary),
    `watch_time` (regression), `like` (binary) and `rating` (regression).
    """

    data: RankingDataConfig = dataclasses.field(default_factory=RankingDataConfig)
    model: RankingModelConfig = dataclasses.field(default_factory=RankingModelConfig)
    tasks: tuple[dict, ...] = dataclasses.field(default_factory=_default_tasks)
    ndcg_cutoffs: tuple[int, ...] = (5, 10)

    def validate(self) -> None:
        super().validate()
        try:
            specs = as_task_specs(self.tasks)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"Invalid `task.tasks`: {e}") from e
        for spec in specs:
            if TASK_TYPES.get(spec.name) != spec.type:
                raise ConfigError(
                    f"Task '{spec.name}' of type '{spec.type}' is not a generated objective; "
                    f"expected names and types from {TASK_TYPES}.")
        names = [s.name for s in specs]
        for field in ("score_weights", "position_bias_tasks"):
            unknown = sorted(set(getattr(self.model, field)) - set(names))
            if unknown:
                raise ConfigError(
                    f"`task.model.{field}` names {unknown}, which are not tasks of this model "
                    f"{names}. Use task names from `task.tasks`.")
        list_size = self.data.list_size
        if not self.ndcg_cutoffs or not all(1 <= k <= list_size for k in self.ndcg_cutoffs):
            raise ConfigError(
                f"`task.ndcg_cutoffs` must be cut-offs in [1, list_size={list_size}]. "
                f"Received: {self.ndcg_cutoffs}")

