"""Argument checks shared by the layers; each raises a ValueError naming the bad value."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import keras


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_int(name: str, value) -> int:
    """Returns `value` if it is a positive integer, else raises."""
    if not _is_int(value) or value < 1:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a positive integer. "
            f"Received: {name}={value!r}"
        )
    return value


def check_units(name: str, value, allow_empty: bool = True) -> tuple[int, ...]:
    """Returns `value` (an int or a sequence of positive ints) as a tuple, else raises."""
    units = (value,) if _is_int(value) else value
    if (
        not isinstance(units, Sequence)
        or isinstance(units, str)
        or not all(_is_int(u) and u > 0 for u in units)
        or (not allow_empty and not units)
    ):
        kind = "tuple" if allow_empty else "non-empty tuple"
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a positive integer or a {kind} "
            f"of positive integers (layer widths). Received: {name}={value!r}"
        )
    return tuple(units)


def check_rate(name: str, value) -> float:
    """Returns `value` as a float if `0 <= value < 1`, else raises."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a float in [0, 1). "
            f"Received: {name}={value!r}"
        )
    return float(value)


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    """Returns `value` if it is one of `choices`, else raises."""
    if value not in choices:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected one of {list(choices)}. "
            f"Received: {name}={value!r}"
        )
    return value


def check_task_output_units(value) -> dict[str, int]:
    """Returns `{task_name: units}` as a dict, else raises."""
    if (
        not isinstance(value, Mapping)
        or not value
        or not all(isinstance(k, str) and k for k in value)
        or not all(_is_int(u) and u > 0 for u in value.values())
    ):
        raise ValueError(
            "Received an invalid value for `task_output_units`, expected a non-empty mapping "
            "of task names (non-empty strings) to output widths (positive integers), e.g. "
            f"{{'ctr': 1, 'rating': 5}}. Received: task_output_units={value!r}"
        )
    return dict(value)


def check_task_names(task_names, num_tasks: int) -> tuple[str, ...] | None:
    """Returns `task_names` as a tuple if it holds `num_tasks` distinct names, else raises."""
    if task_names is None:
        return None
    names = tuple(task_names) if isinstance(task_names, Sequence) else ()
    if (
        isinstance(task_names, str)
        or len(names) != num_tasks
        or len(set(names)) != num_tasks
        or not all(isinstance(n, str) and n for n in names)
    ):
        raise ValueError(
            "Received an invalid value for `task_names`, expected None or "
            f"{num_tasks} distinct non-empty strings (one per task). "
            f"Received: task_names={task_names!r}"
        )
    return names


NUMERIC_FEATURES_FIX = "Encode the features as numbers first (e.g. one-hot or an embedding)."
_DTYPE_KINDS = {
    "float": ("floating-point", ("float", "bfloat")),
    "integer": ("integer", ("int", "uint")),
    "numeric": ("numeric", ("float", "bfloat", "int", "uint", "bool")),
}


def check_input_dtype(layer, arg: str, tensor, kind: str, fix: str) -> None:
    """Raises a ValueError naming the layer, `arg` and its dtype unless it is of `kind`.

    `kind` is `"float"`, `"integer"` or `"numeric"`; `fix` says how to get a valid input.
    """
    dtype = keras.backend.standardize_dtype(tensor.dtype)
    description, prefixes = _DTYPE_KINDS[kind]
    if not dtype.startswith(prefixes):
        raise ValueError(
            f"{type(layer).__name__} expects {description} `{arg}`. Received: {arg}.dtype={dtype}. "
            f"{fix}"
        )
