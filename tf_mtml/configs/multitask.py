"""Config of the multi-task learning task family."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from tf_mtml.configs.base import Config, ConfigError, check_data_dir_is_read
from tf_mtml.data import census
from tf_mtml.models.task_spec import as_task_specs
from tf_mtml.weighting.factory import WEIGHTINGS

ARCHITECTURES = ("mmoe", "omoe", "shared_bottom", "cgc", "ple", "cross_stitch", "soft_sharing",
                 "single_task")
DATA_SOURCES = ("mmoe_synthetic", "census_income")
FILE_SOURCES = ("census_income",)


@dataclasses.dataclass
class MultiTaskDataConfig(Config):
    """Where examples come from.

    `mmoe_synthetic`: Ma et al. 2018, sec. 3.2, drawn from `num_*_examples`, `input_dim`,
    `correlation`, `sin_param_std` and `problem_seed`. `census_income`: the UCI census data
    (`tf_mtml.data.census`) read from `data_dir` (empty: `resolve_data_dir()`), task group
    `census_group` (1: income, marital; 2: education, marital), re-split 60/20/20 with seed
    `problem_seed`; evaluation reads the validation split.
    """

    source: str = "mmoe_synthetic"
    global_batch_size: int = 128
    num_train_examples: int = 16384
    num_eval_examples: int = 4096
    input_dim: int = 100
    correlation: float = 0.5
    sin_param_std: float = 1.0
    problem_seed: int = 0
    data_dir: str = ""
    census_group: int = 1

    def validate(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ConfigError(
                f"Unknown `task.data.source={self.source}`; expected one of {DATA_SOURCES}.")
        check_data_dir_is_read(self.data_dir, self.source, FILE_SOURCES)
        if self.census_group not in census.GROUPS:
            raise ConfigError(
                f"`task.data.census_group` must be one of {sorted(census.GROUPS)}. "
                f"Received: {self.census_group}")
        if self.problem_seed < 0:
            raise ConfigError(
                f"`task.data.problem_seed` must be >= 0. Received: {self.problem_seed}")
        for name in ("global_batch_size", "num_train_examples", "num_eval_examples",
                     "input_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"`task.data.{name}` must be >= 1. Received: {getattr(self, name)}")
        if self.source == "mmoe_synthetic" and self.num_eval_examples < self.global_batch_size:
            raise ConfigError(
                f"`task.data.num_eval_examples={self.num_eval_examples}` is smaller than "
                f"`task.data.global_batch_size={self.global_batch_size}`: evaluation would see "
                "no batch. Raise the first or lower the second."
            )
        if not -1 <= self.correlation <= 1:
            raise ConfigError(
                f"`task.data.correlation` must be in [-1, 1]. Received: {self.correlation}")
        if not 0 <= self.sin_param_std < math.inf:
            raise ConfigError(
                "Received an invalid value for `task.data.sin_param_std`, expected a finite "
                f"number >= 0. Received: sin_param_std={self.sin_param_std}")


@dataclasses.dataclass
class MultiTaskModelConfig(Config):
    """The network below the per-task towers (`tower_units`), by `architecture`.

    - `mmoe`: `num_experts` experts of widths `expert_units`, one gate per task (Ma et al.
      2018); `omoe`: the same experts under one gate shared by all tasks.
    - `shared_bottom`: a shared MLP; `bottom_units=()` sizes its layers so that its parameter
      count matches the MMoE built from the same config (the paper's comparison).
    - `cgc` / `ple`: `num_task_experts` experts per task and `num_shared_experts` shared ones
      of widths `expert_units`, in one level (CGC) or `ple_num_levels` levels (PLE; Tang et
      al. 2020).
    - `cross_stitch`: one MLP column of widths `expert_units` per task, with cross-stitch
      units initialised to `cross_stitch_alpha_same` (Misra et al. 2016); at least 2 tasks.
    - `soft_sharing`: the same columns, with the penalty `soft_sharing_l2 * sum_{i<j}
      ||theta_i - theta_j||^2` between them (Duong et al. 2015).
    - `single_task`: the same columns, independent (no sharing); with one task, the
      single-task baseline.

    `expert_dropout` applies to every mixture of experts (mmoe, omoe, cgc, ple).
    """

    architecture: str = "mmoe"
    num_experts: int = 8
    expert_units: tuple[int, ...] = (16,)
    expert_dropout: float = 0.0
    tower_units: tuple[int, ...] = (8,)
    bottom_units: tuple[int, ...] = ()
    num_task_experts: int = 2
    num_shared_experts: int = 2
    ple_num_levels: int = 2
    cross_stitch_alpha_same: float = 0.9
    soft_sharing_l2: float = 1e-3
    # Loss weighting (`tf_mtml.weighting.get_weighting`): static, uncertainty, dwa, rlw,
    # gradnorm, or a gradient-level method pcgrad, cagrad, mgda.
    weighting: str = "static"
    gradnorm_alpha: float = 1.5
    dwa_temperature: float = 2.0
    dwa_period_steps: int = 0  # 0: one epoch of the training data
    cagrad_c: float = 0.5
    # Logs `diagnostics/cos/<a>__<b>` and `diagnostics/loss_ratio/<task>` every step; costs
    # one backward pass per task.
    gradient_diagnostics: bool = False

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
        for name in ("num_task_experts", "num_shared_experts", "ple_num_levels"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"Received an invalid value for `task.model.{name}`, expected a positive "
                    f"integer. Received: {name}={getattr(self, name)}")
        if not 0 <= self.cross_stitch_alpha_same <= 1:
            raise ConfigError(
                "Received an invalid value for `task.model.cross_stitch_alpha_same`, expected "
                "a number in [0, 1] (the initial weight of a task's own column). Received: "
                f"cross_stitch_alpha_same={self.cross_stitch_alpha_same}")
        if not 0 <= self.soft_sharing_l2 < float("inf"):
            raise ConfigError(
                "Received an invalid value for `task.model.soft_sharing_l2`, expected a finite "
                f"number >= 0. Received: soft_sharing_l2={self.soft_sharing_l2}")
        if self.weighting not in WEIGHTINGS:
            raise ConfigError(
                f"Unknown `task.model.weighting={self.weighting}`; expected one of {WEIGHTINGS}.")
        for name in ("gradnorm_alpha", "cagrad_c"):
            if not getattr(self, name) >= 0:
                raise ConfigError(
                    f"Received an invalid value for `task.model.{name}`, expected a number "
                    f">= 0. Received: {name}={getattr(self, name)}")
        if not self.dwa_temperature > 0:
            raise ConfigError(
                "Received an invalid value for `task.model.dwa_temperature`, expected a "
                f"number > 0. Received: dwa_temperature={self.dwa_temperature}")
        if self.dwa_period_steps < 0:
            raise ConfigError(
                "Received an invalid value for `task.model.dwa_period_steps`, expected an "
                "integer >= 0 (0: one epoch). Received: "
                f"dwa_period_steps={self.dwa_period_steps}")


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
            specs = as_task_specs(self.tasks)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"Invalid `task.tasks`: {e}") from e
        if self.data.source == "census_income":
            _check_census_tasks(specs, self.data.census_group)
        else:
            _check_synthetic_tasks(specs)


def _check_synthetic_tasks(specs) -> None:
    # The generator's two targets are real-valued: a binary or multiclass head would be fed
    # labels that are not classes and still produce a loss.
    if len(specs) > 2 or any(t.type != "regression" for t in specs):
        received = [f"{t.name} ({t.type})" for t in specs]
        raise ConfigError(
            "`task.data.source=mmoe_synthetic` generates two real-valued targets, so "
            f"`task.tasks` must be one or two regression tasks. Received: {received}. Use e.g. "
            "--params_override='task.tasks=[{name: y1, type: regression}, "
            "{name: y2, type: regression}]'."
        )


def _check_census_tasks(specs, group: int) -> None:
    labels = census.GROUPS[group]
    wrong = [f"{t.name} ({t.type})" for t in specs if t.name not in labels or t.type != "binary"]
    if wrong:
        example = ", ".join(f"{{name: {name}, type: binary}}" for name in labels)
        raise ConfigError(
            f"`task.tasks` {wrong} are not labels of census group {group}, whose binary tasks "
            f"are {list(labels)}. Name tasks from these, e.g. "
            f"--params_override='task.tasks=[{example}]'."
        )
