"""Config of the multi-task learning task family."""

from __future__ import annotations

import dataclasses
from typing import Any

from tf_mtml.configs.base import Config, ConfigError
from tf_mtml.models.task_spec import as_task_specs
from tf_mtml.weighting.factory import WEIGHTINGS

ARCHITECTURES = ("mmoe", "shared_bottom")
DATA_SOURCES = ("mmoe_synthetic",)


@dataclasses.dataclass
class MultiTaskDataConfig(Config):
    """Where examples come from. `mmoe_synthetic`: Ma et al. 2018, sec. 3.2."""

    source: str = "mmoe_synthetic"
    global_batch_size: int = 128
    num_train_examples: int = 16384
    num_eval_examples: int = 4096
    input_dim: int = 100
    correlation: float = 0.5
    sin_param_std: float = 1.0
    problem_seed: int = 0

    def validate(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ConfigError(
                f"Unknown `task.data.source={self.source}`; expected one of {DATA_SOURCES}.")
        for name in ("global_batch_size", "num_train_examples", "num_eval_examples",
                     "input_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"`task.data.{name}` must be >= 1. Received: {getattr(self, name)}")
        if self.num_eval_examples < self.global_batch_size:
            raise ConfigError(
                f"`task.data.num_eval_examples={self.num_eval_examples}` is smaller than "
                f"`task.data.global_batch_size={self.global_batch_size}`: evaluation would see "
                "no batch. Raise the first or lower the second."
            )
        if not -1 <= self.correlation <= 1:
            raise ConfigError(
                f"`task.data.correlation` must be in [-1, 1]. Received: {self.correlation}")


@dataclasses.dataclass
class MultiTaskModelConfig(Config):
    """The network: MMoE (experts + per-task gates) or shared-bottom, then per-task towers.

    `bottom_units=()` sizes the shared-bottom's layers so that its parameter count matches
    the MMoE built from the same config (the paper's comparison).
    """

    architecture: str = "mmoe"
    num_experts: int = 8
    expert_units: tuple[int, ...] = (16,)
    expert_dropout: float = 0.0
    tower_units: tuple[int, ...] = (8,)
    bottom_units: tuple[int, ...] = ()
    weighting: str = "static"

    def validate(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(
                f"Unknown `task.model.architecture={self.architecture}`; expected one of "
                f"{ARCHITECTURES}.")
        if self.num_experts < 1:
            raise ConfigError(
                "Received an invalid value for `task.model.num_experts`, expected a positive "
                f"integer. Received: num_experts={self.num_experts}")
        if not 0 <= self.expert_dropout < 1:
            raise ConfigError(
                "`task.model.expert_dropout` must be in [0, 1) (1 would drop every expert). "
                f"Received: expert_dropout={self.expert_dropout}")
        if not self.expert_units or min(self.expert_units + self.tower_units
                                         + self.bottom_units) < 1:
            raise ConfigError("`task.model.*_units` must be positive layer widths.")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(
                f"Unknown `task.model.weighting={self.weighting}`; expected one of {WEIGHTINGS}.")


def _default_tasks() -> tuple[dict[str, Any], ...]:
    return ({"name": "y1", "type": "regression"}, {"name": "y2", "type": "regression"})


@dataclasses.dataclass
class MultiTaskConfig(Config):
    """A multi-task experiment: data, network and the task specs (`TaskSpec` fields)."""

    data: MultiTaskDataConfig = dataclasses.field(default_factory=MultiTaskDataConfig)
    model: MultiTaskModelConfig = dataclasses.field(default_factory=MultiTaskModelConfig)
    tasks: tuple[dict, ...] = dataclasses.field(default_factory=_default_tasks)

    def validate(self) -> None:
        super().validate()
        try:
            as_task_specs(self.tasks)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"Invalid `task.tasks`: {e}") from e
