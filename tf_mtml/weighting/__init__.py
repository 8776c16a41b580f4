"""tf_mtml.weighting: loss-level weightings, gradient-level methods and gradient diagnostics."""

from tf_mtml.weighting.cagrad import cagrad, cagrad_weights
from tf_mtml.weighting.diagnostics import GradientDiagnostics, pairwise_cosine, task_pairs
from tf_mtml.weighting.dwa import DynamicWeightAverage, dwa_weights
from tf_mtml.weighting.factory import WEIGHTINGS, get_weighting
from tf_mtml.weighting.gradient_methods import GRADIENT_METHODS, GradientWeighting
from tf_mtml.weighting.gradnorm import GradNorm, gradnorm_weight_gradient
from tf_mtml.weighting.mgda import mgda, min_norm_weights
from tf_mtml.weighting.pcgrad import pcgrad, pcgrad_task_order
from tf_mtml.weighting.random_weighting import RandomLossWeighting, random_loss_weights
from tf_mtml.weighting.static import StaticWeighting
from tf_mtml.weighting.train_step import multitask_train_step
from tf_mtml.weighting.uncertainty import UncertaintyWeighting

__all__ = [
    "GRADIENT_METHODS",
    "WEIGHTINGS",
    "DynamicWeightAverage",
    "GradNorm",
    "GradientDiagnostics",
    "GradientWeighting",
    "RandomLossWeighting",
    "StaticWeighting",
    "UncertaintyWeighting",
    "cagrad",
    "cagrad_weights",
    "dwa_weights",
    "get_weighting",
    "gradnorm_weight_gradient",
    "mgda",
    "min_norm_weights",
    "multitask_train_step",
    "pairwise_cosine",
    "pcgrad",
    "pcgrad_task_order",
    "random_loss_weights",
    "task_pairs",
]
