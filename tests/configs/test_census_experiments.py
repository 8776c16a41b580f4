"""The census-income experiments: registration, config checks and a tiny trainer run."""

import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.configs import experiments  # noqa: F401  (registers every experiment)
from tf_mtml.configs.base import ConfigError
from tf_mtml.configs.census_experiments import census_tasks
from tf_mtml.configs.registry import get_experiment
from tf_mtml.data import census, resolve_data_dir
from tf_mtml.tasks.factory import build_task
from tf_mtml.train.loop import Trainer

ARCHITECTURES = {"single_task_census": "single_task", "shared_bottom_census": "shared_bottom",
                 "omoe_census": "omoe", "mmoe_census": "mmoe", "ple_census": "ple"}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_registered_and_valid(name):
    config = get_experiment(name)
    config.validate()
    assert config.task.model.architecture == ARCHITECTURES[name]
    assert config.task.data.source == "census_income" and config.task.data.census_group == 1
    tasks = [t["name"] for t in config.task.tasks]
    assert tasks == (["income"] if name == "single_task_census" else ["income", "marital"])
    assert all(t["type"] == "binary" and list(t["metrics"]) == ["auc"]
               for t in config.task.tasks)


def test_group_2_needs_its_task_names():
    config = get_experiment("mmoe_census")
    config.override({"task": {"data": {"census_group": 2}}})
    with pytest.raises(ConfigError, match=r"\['income \(binary\)'\] are not labels of census "
                                          r"group 2.*\['education', 'marital'\].*task.tasks="):
        config.validate()
    config.override_from_string(
        "task.tasks=[{name: education, type: binary}, {name: marital, type: binary}]")
    config.validate()
    assert census_tasks(2) == (
        {"name": "education", "type": "binary", "metrics": ["auc"]},
        {"name": "marital", "type": "binary", "metrics": ["auc"]})


@pytest.mark.parametrize("override, message", [
    ("task.data.census_group=3", r"census_group` must be one of \[1, 2\]. Received: 3"),
    ("task.data.problem_seed=-1", r"problem_seed` must be >= 0. Received: -1"),
    ("task.tasks=[{name: income, type: regression}]", r"\['income \(regression\)'\]"),
])
def test_invalid_census_configs(override, message):
    config = get_experiment("mmoe_census").override_from_string(override)
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_data_dir_without_the_file_says_how_to_get_it(tmp_path):
    config = get_experiment("mmoe_census").override({"task": {"data": {"data_dir": str(tmp_path)}}})
    with pytest.raises(FileNotFoundError, match="census-income.test.gz does not exist"):
        _ = build_task(config).arrays


@pytest.fixture(scope="module")
def data_dir():
    try:
        root = resolve_data_dir()
        census.census_path(root)
    except FileNotFoundError as error:
        pytest.skip(f"No census-income data: {error}")
    return root


@pytest.mark.slow
def test_tiny_trainer_run_on_census(data_dir, tmp_path):
    config = get_experiment("mmoe_census").override_from_string(
        "trainer.train_steps=4,trainer.steps_per_loop=2,trainer.checkpoint_interval=2,"
        "trainer.validation_interval=2,task.data.global_batch_size=256")
    config.validate()
    task = build_task(config)
    loaded = census.load_census_income(data_dir, group=1)
    assert task.input_dim == loaded.num_features
    assert task.input_signature()["features"].shape.as_list() == [None, loaded.num_features]
    for split, source in (("train", "train"), ("eval", "validation"), ("test", "test")):
        features, labels = task.arrays[split]
        np.testing.assert_array_equal(features["features"], loaded.features[source])
        np.testing.assert_array_equal(labels["income"], loaded.labels[source]["income"])

    trainer = Trainer(task, tf.distribute.get_strategy(), config.trainer, str(tmp_path))
    logs = trainer.train(4)
    assert trainer.step == 4 and np.isfinite(logs["loss"])
    results = trainer.evaluate(steps=2)
    assert {"loss", "income/auc", "marital/auc"} <= set(results)
    assert all(0.0 <= results[k] <= 1.0 for k in ("income/auc", "marital/auc"))


def test_unknown_task_for_the_group_is_rejected(data_dir):
    config = get_experiment("mmoe_census")
    config.task.tasks = ({"name": "education", "type": "binary"},)
    with pytest.raises(ValueError, match=r"\['education'\] are not labels of census group 1"):
        _ = build_task(config).arrays
