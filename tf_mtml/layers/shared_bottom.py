"""The Shared-Bottom baseline and parameter counts for budget-matched comparisons.

MMoE papers compare against a Shared-Bottom model with the same number of parameters; the
functions here count parameters in closed form and pick the bottom width that matches a
budget.
"""

from __future__ import annotations

from collections.abc import Mapping

import keras

from tf_mtml.layers._validation import (
    check_positive_int,
    check_task_output_units,
    check_units,
)
from tf_mtml.layers.multi_head import MultiHead


@keras.saving.register_keras_serializable(package="tf_mtml")
class SharedBottom(MultiHead):
    """Shared-Bottom multi-task network: a shared MLP bottom, then per-task towers and heads.

    Caruana, "Multitask Learning", 1997 (hard parameter sharing); the baseline of MMoE
    (Ma et al. KDD 2018). It is exactly `MultiHead` with the trunk called "bottom", as in the
    literature; a subclass rather than an alias so that the argument has the literature's name
    and saved models and summaries say which baseline they hold.

    Args:
        task_output_units: `{task_name: output width}`.
        bottom_units: Hidden widths of the shared bottom.
        tower_units: Hidden widths of every task tower.
        activation: Activation of the bottom and tower layers.
        dropout: Dropout rate after every bottom and tower layer, in `[0, 1)`.
        **kwargs: Base layer keyword arguments.

    Call arguments:
        inputs: `(batch, d)`.
        training: Whether dropout is active.

    Returns:
        `{task_name: (batch, task_output_units[task_name])}`, float32.

    Example:
        ```python
        width = shared_bottom_units_for_budget(512, mmoe_budget, {"a": 1, "b": 1}, (64,))
        outputs = SharedBottom({"a": 1, "b": 1}, bottom_units=(width,), tower_units=(64,))(x)
        ```
    """

    def __init__(
        self,
        task_output_units: Mapping[str, int],
        bottom_units: tuple[int, ...],
        tower_units: tuple[int, ...] = (),
        activation: str | None = "relu",
        dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(
            task_output_units,
            trunk_units=check_units("bottom_units", bottom_units),
            tower_units=tower_units,
            activation=activation,
            dropout=dropout,
            **kwargs,
        )

    def get_config(self):
        config = super().get_config()
        config["bottom_units"] = config.pop("trunk_units")
        return config


def _mlp_param_count(input_dim: int, units: tuple[int, ...]) -> int:
    count, fan_in = 0, input_dim
    for width in units:
        count += fan_in * width + width
        fan_in = width
    return count


def _towers_param_count(
    input_dim: int, task_output_units: Mapping[str, int], tower_units: tuple[int, ...]
) -> int:
    head_input = tower_units[-1] if tower_units else input_dim
    return sum(
        _mlp_param_count(input_dim, tower_units) + head_input * units + units
        for units in task_output_units.values()
    )


def shared_bottom_param_count(
    input_dim: int,
    bottom_units: tuple[int, ...],
    task_output_units: Mapping[str, int],
    tower_units: tuple[int, ...] = (),
) -> int:
    """Number of parameters of `SharedBottom` (and `MultiHead`) on `input_dim` features."""
    check_positive_int("input_dim", input_dim)
    bottom_units = check_units("bottom_units", bottom_units)
    tower_units = check_units("tower_units", tower_units)
    task_output_units = check_task_output_units(task_output_units)
    bottom_output = bottom_units[-1] if bottom_units else input_dim
    return _mlp_param_count(input_dim, bottom_units) + _towers_param_count(
        bottom_output, task_output_units, tower_units
    )


def mmoe_param_count(
    input_dim: int,
    num_experts: int,
    expert_units: tuple[int, ...] | int,
    num_tasks: int,
    tower_units: tuple[int, ...],
    task_output_units: Mapping[str, int],
    use_gate_bias: bool = True,
) -> int:
    """Number of parameters of `MMoE` followed by `TaskTowers`, in closed form.

    `num_experts` expert MLPs on `input_dim` features, `num_tasks` gates of
    `input_dim * num_experts` weights (plus `num_experts` biases when `use_gate_bias`), and
    one tower and head per task on `expert_units[-1]` features.
    """
    check_positive_int("input_dim", input_dim)
    check_positive_int("num_experts", num_experts)
    expert_units = check_units("expert_units", expert_units, allow_empty=False)
    task_output_units = check_task_output_units(task_output_units)
    if check_positive_int("num_tasks", num_tasks) != len(task_output_units):
        raise ValueError(
            f"Received num_tasks={num_tasks} but {len(task_output_units)} tasks in "
            f"task_output_units={task_output_units}; pass num_tasks=len(task_output_units)."
        )
    experts = num_experts * _mlp_param_count(input_dim, expert_units)
    gates = num_tasks * (input_dim * num_experts + (num_experts if use_gate_bias else 0))
    towers = _towers_param_count(
        expert_units[-1], task_output_units, check_units("tower_units", tower_units)
    )
    return experts + gates + towers


def shared_bottom_units_for_budget(
    input_dim: int,
    param_budget: int,
    task_output_units: Mapping[str, int],
    tower_units: tuple[int, ...] = (),
    num_bottom_layers: int = 1,
) -> int:
    """The bottom width whose `SharedBottom` parameter count is closest to `param_budget`.

    The bottom has `num_bottom_layers` layers of the same width. The count grows strictly
    with the width, so a bisection finds the largest width within the budget and the answer
    is it or the next width, whichever is closer (the smaller on a tie; at least 1).

    Args:
        input_dim: Number of input features.
        param_budget: Target number of parameters, e.g. from `mmoe_param_count`.
        task_output_units: `{task_name: output width}`.
        tower_units: Hidden widths of every task tower.
        num_bottom_layers: Number of bottom layers.

    Returns:
        The bottom width (a positive int).
    """
    check_positive_int("param_budget", param_budget)
    check_positive_int("num_bottom_layers", num_bottom_layers)

    def count(width: int) -> int:
        return shared_bottom_param_count(
            input_dim, (width,) * num_bottom_layers, task_output_units, tower_units
        )

    low, high = 1, 2
    while count(high) <= param_budget:
        low, high = high, 2 * high
    while high - low > 1:  # invariant: count(high) > budget, and count(low) <= budget or low=1
        middle = (low + high) // 2
        low, high = (middle, high) if count(middle) <= param_budget else (low, middle)
    return min((low, high), key=lambda width: (abs(count(width) - param_budget), width))
