"""Argument checks shared by the weighting layers."""

from __future__ import annotations

from collections.abc import Mapping


def check_task_weights(task_weights: Mapping[str, float]) -> dict[str, float]:
    """`{task: prior weight >= 0}`, non-empty; raises a ValueError naming the bad value."""
    weights = {str(k): float(v) for k, v in dict(task_weights).items()}
    bad = {k: v for k, v in weights.items() if not v >= 0}
    if not weights or bad:
        raise ValueError(
            "Received an invalid value for `task_weights`, expected a non-empty mapping of "
            f"task names to prior weights >= 0. Received: task_weights={weights}"
        )
    return weights


def check_positive(name: str, value, integer: bool = False):
    """Returns `value` if it is a positive number (integer if asked), else raises."""
    ok = isinstance(value, int) and not isinstance(value, bool) if integer else \
        isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not value > 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(
            f"Received an invalid value for `{name}`, expected {kind}. Received: {name}={value!r}")
    return value


def check_seed(seed) -> int:
    """Returns `seed` if it is an integer, else raises."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(
            f"Received an invalid value for `seed`, expected an integer. Received: seed={seed!r}")
    return seed


def check_losses_vector(task_losses, num_tasks: int) -> None:
    """Raises unless `task_losses` has the static shape `(num_tasks,)`."""
    shape = tuple(task_losses.shape)
    if shape != (num_tasks,):
        raise ValueError(
            f"Expected the global task losses as a vector of shape ({num_tasks},), one per task "
            f"in the weighting's order. Received: shape={shape}"
        )
