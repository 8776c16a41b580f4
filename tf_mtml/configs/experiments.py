"""Imports every module of registered experiments, so that entry points see them all."""

from tf_mtml.configs import (
    census_experiments,
    contrastive_experiments,
    meta_experiments,
    multitask_experiments,
    ranking_experiments,
)
from tf_mtml.configs.registry import get_experiment, list_experiments

__all__ = ["census_experiments", "contrastive_experiments", "get_experiment", "list_experiments",
           "meta_experiments", "multitask_experiments", "ranking_experiments"]
