"""Tests for tf_mtml.configs.contrastive and the registered contrastive experiments."""

import pytest

from tf_mtml.configs.base import ConfigError
from tf_mtml.configs.contrastive import ContrastiveConfig
from tf_mtml.configs.contrastive_experiments import simclr_digits, supcon_omniglot
from tf_mtml.configs.registry import get_experiment


def test_registered_experiments_validate_and_round_trip_through_yaml(tmp_path):
    for factory, name in ((simclr_digits, "simclr_digits"), (supcon_omniglot, "supcon_omniglot")):
        config = get_experiment(name)
        config.validate()
        path = tmp_path / f"{name}.yaml"
        path.write_text(config.to_yaml())
        assert factory().override_from_yaml(str(path)).as_dict() == config.as_dict()
    digits, omniglot = simclr_digits().task, supcon_omniglot().task
    assert (digits.data.source, digits.model.loss, digits.model.pool_blocks) == (
        "digits", "nt_xent", 3)
    assert tuple(digits.evaluation.labels_per_class) == (1, 5, 10)
    assert (omniglot.data.source, omniglot.model.loss, omniglot.evaluation.episodes) == (
        "omniglot", "supcon", 1000)


def test_dotted_overrides_reach_every_section():
    config = simclr_digits()
    config.override_from_string(
        "task.augment.crop_scale=[0.3,1.0],task.model.projection_units=[16],"
        "task.evaluation.labels_per_class=[2],task.data.global_batch_size=8")
    config.validate()
    task = config.task
    assert task.augment.crop_scale == (0.3, 1.0) and task.model.projection_units == (16,)
    assert task.evaluation.labels_per_class == (2,) and task.data.global_batch_size == 8
    with pytest.raises(ConfigError, match=r"Unknown config key `task.model.head`"):
        config.override_from_string("task.model.head=3")


@pytest.mark.parametrize("override, message", [
    ({"data": {"source": "mnist"}}, r"task.data.source=mnist"),
    ({"data": {"global_batch_size": 1}}, r"global_batch_size` must be >= 2"),
    ({"data": {"test_fraction": 1.0}}, r"test_fraction` must be in \(0, 1\)"),
    ({"augment": {"crop_scale": [0.5]}}, r"crop_scale` must be a pair"),
    ({"augment": {"crop_scale": [0.5, 1.5]}}, r"max must be <= 1"),
    ({"augment": {"jitter_probability": 1.5}}, r"jitter_probability` must be a probability"),
    ({"augment": {"contrast": -0.1}}, r"contrast` must be >= 0"),
    ({"model": {"loss": "infonce"}}, r"task.model.loss=infonce"),
    ({"model": {"temperature": 0.0}}, r"temperature` must be > 0"),
    ({"model": {"projection_units": [8, 0]}}, r"projection_units` must be positive"),
    ({"model": {"pool_blocks": 4}}, r"pool_blocks=4` halves the 8x8 images.*pool_blocks <= 3"),
    ({"evaluation": {"labels_per_class": []}}, r"labels_per_class` must be a non-empty"),
    ({"evaluation": {"finetune_steps": 0}}, r"finetune_steps` must be >= 1"),
    ({"evaluation": {"probe_c": 0.0}}, r"probe_c` must be > 0"),
    ({"evaluation": {"ood_quantile": 1.0}}, r"ood_quantile` must be in \(0, 1\)"),
    ({"evaluation": {"ood_max_references": 10}}, r"ood_max_references=10` must exceed"),
])
def test_bad_values_are_named(override, message):
    config = simclr_digits().task.override(override)
    with pytest.raises(ConfigError, match=message):
        config.validate()


@pytest.mark.parametrize("override, message", [
    ({"train_split": "train+val", "eval_split": "val"}, r"share characters"),
    ({"eval_split": "dev"}, r"eval_split=dev"),
    ({"global_batch_size": 100, "classes_per_batch": 64}, r"must be a multiple of"),
    ({"global_batch_size": 64, "classes_per_batch": 64}, r"at least 2 drawings"),
])
def test_omniglot_batches_and_splits_are_checked(override, message):
    config = supcon_omniglot().task
    config.data.override(override)
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_defaults_validate():
    ContrastiveConfig().validate()
