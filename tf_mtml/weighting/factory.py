"""Builds a loss-weighting layer from its name."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tf_mtml.models.task_spec import TaskSpec
from tf_mtml.weighting.static import StaticWeighting
from tf_mtml.weighting.uncertainty import UncertaintyWeighting

WEIGHTINGS = ("static", "uncertainty")


def get_weighting(weighting: str | keras.layers.Layer,
                  tasks: Sequence[TaskSpec]) -> keras.layers.Layer:
    """Returns `weighting` if it is a layer, else builds the named weighting for `tasks`."""
    if isinstance(weighting, keras.layers.Layer):
        return weighting
    if weighting == "static":
        return StaticWeighting({t.name: t.weight for t in tasks}, name="weighting")
    if weighting == "uncertainty":
        return UncertaintyWeighting({t.name: t.type for t in tasks}, name="weighting")
    raise ValueError(
        f"Received an invalid value for `weighting`, expected one of {WEIGHTINGS} or a "
        f"weighting layer. Received: weighting={weighting!r}"
    )
