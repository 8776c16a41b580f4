"""Builds a loss-weighting layer from its name."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tf_mtml.models.task_spec import TaskSpec
from tf_mtml.weighting.dwa import DynamicWeightAverage
from tf_mtml.weighting.gradient_methods import GRADIENT_METHODS, GradientWeighting
from tf_mtml.weighting.gradnorm import GradNorm
from tf_mtml.weighting.random_weighting import RandomLossWeighting
from tf_mtml.weighting.static import StaticWeighting
from tf_mtml.weighting.uncertainty import UncertaintyWeighting

WEIGHTINGS = ("static", "uncertainty", "dwa", "rlw", "gradnorm", *GRADIENT_METHODS)


def get_weighting(weighting: str | keras.layers.Layer, tasks: Sequence[TaskSpec], *,
                  seed: int = 0, gradnorm_alpha: float = 1.5, dwa_temperature: float = 2.0,
                  dwa_period_steps: int = 100, cagrad_c: float = 0.5) -> keras.layers.Layer:
    """Returns `weighting` if it is a layer, else builds the named weighting for `tasks`.

    Args:
        weighting: A layer, or one of `WEIGHTINGS`: `"static"` (the specs' weights),
            `"uncertainty"` (Kendall et al. 2018), `"dwa"` (Liu et al. 2019), `"rlw"`
            (random weights, Lin et al. 2021), `"gradnorm"` (Chen et al. 2018), or the
            gradient-level `"pcgrad"`, `"cagrad"`, `"mgda"`.
        tasks: The model's task specs; their weights are the prior weights.
        seed: Seed of RLW's weights and PCGrad's task orders.
        gradnorm_alpha: GradNorm's asymmetry `alpha`.
        dwa_temperature: DWA's temperature `T`.
        dwa_period_steps: Training steps per DWA averaging period.
        cagrad_c: CAGrad's `c`.
    """
    if isinstance(weighting, keras.layers.Layer):
        return weighting
    priors = {t.name: t.weight for t in tasks}
    if weighting == "static":
        return StaticWeighting(priors, name="weighting")
    if weighting == "uncertainty":
        return UncertaintyWeighting({t.name: t.type for t in tasks}, name="weighting")
    if weighting == "dwa":
        return DynamicWeightAverage(priors, temperature=dwa_temperature,
                                    period_steps=dwa_period_steps, name="weighting")
    if weighting == "rlw":
        return RandomLossWeighting(priors, seed=seed, name="weighting")
    if weighting == "gradnorm":
        return GradNorm(priors, alpha=gradnorm_alpha, name="weighting")
    if weighting in GRADIENT_METHODS:
        return GradientWeighting(weighting, priors, cagrad_c=cagrad_c, seed=seed,
                                 name="weighting")
    raise ValueError(
        f"Received an invalid value for `weighting`, expected one of {WEIGHTINGS} or a "
        f"weighting layer. Received: weighting={weighting!r}"
    )
