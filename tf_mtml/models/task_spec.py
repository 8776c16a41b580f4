"""Task specifications: what each head of a multi-task model predicts and how it is scored."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

TASK_TYPES = ("binary", "multiclass", "regression")

# Per-example loss names each task type accepts; the first is the default.
LOSSES = {
    "binary": ("binary_crossentropy",),
    "multiclass": ("sparse_categorical_crossentropy",),
    "regression": ("mse", "mae", "huber"),
}

# Metric names each task type accepts; the first is the default.
METRICS = {
    "binary": ("auc", "accuracy"),
    "multiclass": ("accuracy",),
    "regression": ("mse", "mae"),
}


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task of a multi-task model.

    Args:
        name: Task name; the key of its label, its model output and its metrics
            (`<name>/<metric>`). Letters, digits and `_` only.
        type: `"binary"` (one logit, labels 0/1 float, NaN = missing),
            `"multiclass"` (`num_classes` logits, integer labels, -1 = missing) or
            `"regression"` (one value, float labels, NaN = missing).
        num_classes: Number of classes, required for `"multiclass"` (>= 2).
        weight: Static loss weight (>= 0). Used by static weighting and as the
            prior weight of the other weighting schemes.
        loss: Per-example loss; defaults to binary / sparse categorical
            cross-entropy on logits, or `"mse"` for regression (`"mae"`, `"huber"`).
        metrics: Metric names; default `("auc",)`, `("accuracy",)`, `("mse",)`.
        standardize: Regression only: learn on `(y - mean) / std` so that tasks of
            different scales get comparable losses; the model keeps the statistics and
            serves predictions in the label's own units.
    """

    name: str
    type: str
    num_classes: int | None = None
    weight: float = 1.0
    loss: str | None = None
    metrics: tuple[str, ...] | None = None
    standardize: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.replace("_", "").isalnum():
            raise ValueError(
                "Received an invalid task `name`, expected a non-empty string of letters, "
                f"digits and `_` (it becomes a signature output name). Received: name={self.name!r}"
            )
        if self.type not in TASK_TYPES:
            raise ValueError(
                f"Received an invalid value for `type` of task '{self.name}', expected one of "
                f"{TASK_TYPES}. Received: type={self.type!r}"
            )
        if self.type == "multiclass":
            if not isinstance(self.num_classes, int) or self.num_classes < 2:
                raise ValueError(
                    f"Task '{self.name}' is multiclass and needs `num_classes` >= 2. "
                    f"Received: num_classes={self.num_classes!r}"
                )
        elif self.num_classes not in (None, 1):
            raise ValueError(
                f"Task '{self.name}' of type '{self.type}' has one output; `num_classes` is "
                f"only for multiclass tasks. Received: num_classes={self.num_classes!r}"
            )
        if not 0 <= self.weight < math.inf:
            raise ValueError(
                f"Task '{self.name}' needs a finite loss `weight` >= 0. "
                f"Received: weight={self.weight!r}"
            )
        if self.loss is not None and self.loss not in LOSSES[self.type]:
            raise ValueError(
                f"Received an invalid `loss` for {self.type} task '{self.name}', expected one "
                f"of {LOSSES[self.type]}. Received: loss={self.loss!r}"
            )
        for metric in self.metrics or ():
            if metric not in METRICS[self.type]:
                raise ValueError(
                    f"Received an invalid metric for {self.type} task '{self.name}', expected "
                    f"names from {METRICS[self.type]}. Received: {metric!r}"
                )
        if self.standardize and self.type != "regression":
            raise ValueError(
                f"Task '{self.name}': `standardize=True` only applies to regression tasks. "
                f"Received: type={self.type!r}"
            )
        if self.metrics is not None:
            object.__setattr__(self, "metrics", tuple(self.metrics))

    @property
    def output_units(self) -> int:
        """Width of the task's raw output (logits or standardised value)."""
        return self.num_classes if self.type == "multiclass" else 1

    @property
    def loss_name(self) -> str:
        return self.loss or LOSSES[self.type][0]

    @property
    def metric_names(self) -> tuple[str, ...]:
        return self.metrics if self.metrics is not None else (METRICS[self.type][0],)

    def get_config(self) -> dict[str, Any]:
        config = dataclasses.asdict(self)
        if config["metrics"] is not None:
            config["metrics"] = list(config["metrics"])
        return config


def as_task_specs(tasks: Sequence[TaskSpec | Mapping[str, Any]]) -> tuple[TaskSpec, ...]:
    """Normalises a list of `TaskSpec`s or config dicts; checks the names are unique."""
    specs = tuple(t if isinstance(t, TaskSpec) else _from_config(i, t) for i, t in enumerate(tasks))
    if not specs:
        raise ValueError("A multi-task model needs at least one task. Received: tasks=[]")
    names = [t.name for t in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"Task names must be unique. Received duplicates: {duplicates}")
    return specs


def _from_config(index: int, config: Mapping[str, Any]) -> TaskSpec:
    """A `TaskSpec` from its config dict, naming unknown or missing fields."""
    fields = [f.name for f in dataclasses.fields(TaskSpec)]
    if not isinstance(config, Mapping):
        problem = "it is not a mapping"
    else:
        unknown = sorted(set(config) - set(fields))
        missing = [key for key in ("name", "type") if key not in config]
        problem = (f"unknown field(s) {unknown}" if unknown
                   else f"missing field(s) {missing}" if missing else "")
    if problem:
        raise ValueError(
            f"Received an invalid config for task {index}: {problem}. A task is a mapping of "
            f"TaskSpec fields {fields}, e.g. {{name: ctr, type: binary}}. Received: {config!r}"
        )
    return TaskSpec(**dict(config))
