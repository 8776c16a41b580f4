"""Tests of tf_mtml.train.negative_transfer."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.configs import multitask_experiments  # noqa: F401  (registers experiments)
from tf_mtml.configs.multitask import MultiTaskModelConfig
from tf_mtml.configs.registry import get_experiment
from tf_mtml.tasks.factory import build_task
from tf_mtml.train.loop import Trainer
from tf_mtml.train.negative_transfer import (
    _restrict_labels,
    default_higher_is_better,
    negative_transfer_report,
    run_negative_transfer,
    single_task_config,
)

SMALL = ("task.data.num_train_examples=256,task.data.num_eval_examples=64,"
         "task.data.global_batch_size=32,task.data.input_dim=6,task.model.expert_units=[4],"
         "task.model.num_experts=2,task.model.tower_units=[3],trainer.train_steps=3,"
         "trainer.steps_per_loop=3,trainer.checkpoint_interval=3,trainer.validation_interval=3")


def test_report_closed_form():
    report = negative_transfer_report({"a/auc": 0.9, "b/mse": 0.5, "loss": 1.0},
                                      {"a/auc": 0.8, "b/mse": 0.4},
                                      {"a/auc": True, "b/mse": False})
    a, b = report["tasks"]["a/auc"], report["tasks"]["b/mse"]
    assert a["relative_gain_pct"] == pytest.approx(12.5)  # (0.9 - 0.8) / 0.8
    assert b["relative_gain_pct"] == pytest.approx(-25.0)  # -(0.5 - 0.4) / 0.4
    assert a["delta"] == pytest.approx(0.1) and b["delta"] == pytest.approx(0.1)
    assert report["delta_m_pct"] == pytest.approx(-6.25)
    assert report["num_tasks"] == 2 and report["negative_transfer"] == ["b/mse"]
    assert (a["multi_task"], a["single_task"], a["higher_is_better"]) == (0.9, 0.8, True)


def test_report_matches_numpy_over_many_tasks():
    rng = np.random.default_rng(0)
    multi, single = rng.uniform(0.1, 2.0, size=6), rng.uniform(0.1, 2.0, size=6)
    higher = rng.random(6) < 0.5
    keys = [f"t{k}/metric" for k in range(6)]
    report = negative_transfer_report(dict(zip(keys, multi, strict=True)),
                                      dict(zip(keys, np.float32(single), strict=True)),
                                      {k: bool(h) for k, h in zip(keys, higher, strict=True)})
    sign = np.where(higher, 1.0, -1.0)
    gains = sign * (multi - np.float32(single)) / np.float32(single) * 100
    assert report["delta_m_pct"] == pytest.approx(gains.mean(), rel=1e-9)
    assert report["negative_transfer"] == [k for k, g in zip(keys, gains, strict=True) if g < 0]


@pytest.mark.parametrize(
    "multi, single, higher, match",
    [
        ({"a/auc": 0.9}, {"a/auc": 0.8}, {}, "higher_is_better=\\{\\}"),
        ({"a/auc": 0.9}, {"a/auc": 0.8}, {"a/auc": 1}, "higher_is_better=\\{'a/auc': 1\\}"),
        ({"a/auc": 0.9}, {"a/auc": 0.8}, ["a/auc"], "higher_is_better=\\['a/auc'\\]"),
        ({"b/auc": 0.9}, {"a/auc": 0.8}, {"a/auc": True}, "'a/auc' is missing from "
                                                          "`multi_task_metrics`"),
        ({"a/auc": 0.9}, {}, {"a/auc": True}, "'a/auc' is missing from `single_task_metrics`"),
        ({"a/auc": float("nan")}, {"a/auc": 0.8}, {"a/auc": True}, "not finite"),
        ({"a/mse": 0.1}, {"a/mse": 0.0}, {"a/mse": False}, "single-task value of 'a/mse' is 0"),
    ],
)
def test_invalid_report_inputs_raise(multi, single, higher, match):
    with pytest.raises(ValueError, match=match):
        negative_transfer_report(multi, single, higher)


def test_default_metrics_are_each_tasks_first_metric():
    tasks = [{"name": "click", "type": "binary"}, {"name": "watch", "type": "regression"},
             {"name": "genre", "type": "multiclass", "num_classes": 3},
             {"name": "rating", "type": "regression", "metrics": ["mae", "mse"]}]
    assert default_higher_is_better(tasks) == {"click/auc": True, "watch/mse": False,
                                               "genre/accuracy": True, "rating/mae": False}


def test_single_task_config_keeps_everything_but_the_tasks_and_network():
    params = get_experiment("mmoe_synthetic").override_from_string(
        SMALL + ",task.model.expert_dropout=0.1,task.model.weighting=uncertainty")
    single = single_task_config(params, "y2")
    assert single.task.tasks == ({"name": "y2", "type": "regression"},)
    assert single.task.model.as_dict() == MultiTaskModelConfig(
        architecture="single_task", expert_units=(4,), tower_units=(3,)).as_dict()
    assert params.task.model.architecture == "mmoe" and len(params.task.tasks) == 2
    single.task.tasks, single.task.model = params.task.tasks, params.task.model
    assert single.as_dict() == params.as_dict()
    # Every architecture of an experiment has the same baselines.
    other = get_experiment("mmoe_synthetic").override_from_string(
        SMALL + ",task.model.architecture=ple,task.model.ple_num_levels=3")
    assert single_task_config(other, "y2").as_dict() == single_task_config(params, "y2").as_dict()
    with pytest.raises(ValueError, match="Unknown task 'y3'.*'y1', 'y2'"):
        single_task_config(params, "y3")


@pytest.mark.slow
def test_runner_trains_baselines_with_the_same_budget(tmp_path):
    params = get_experiment("mmoe_synthetic").override_from_string(
        SMALL + ",task.model.architecture=ple")
    result = run_negative_transfer(params, str(tmp_path))
    assert result["train_steps"] == 3
    for run in ("multi_task", "single_task/y1", "single_task/y2"):
        assert os.path.exists(tmp_path / run / "ckpt-3.index")
    assert set(result["single_task"]) == {"y1", "y2"}
    for name, results in result["single_task"].items():
        other = "y2" if name == "y1" else "y1"
        assert f"{name}/mse" in results and not any(k.startswith(other) for k in results)
    single = {f"{n}/mse": r[f"{n}/mse"] for n, r in result["single_task"].items()}
    expected = negative_transfer_report(result["multi_task"], single,
                                        {"y1/mse": False, "y2/mse": False})
    assert result["report"] == expected
    # A second run restores every finished run instead of training (and saving) again, and
    # another architecture reuses the baselines.
    saved = {run: os.stat(tmp_path / run / "ckpt-3.index").st_mtime_ns
             for run in ("multi_task", "single_task/y1", "single_task/y2")}
    assert run_negative_transfer(params, str(tmp_path))["report"] == expected
    other = get_experiment("mmoe_synthetic").override_from_string(
        SMALL + ",task.model.architecture=cross_stitch")
    shared = run_negative_transfer(other, str(tmp_path / "cross_stitch"),
                                   baseline_dir=str(tmp_path / "single_task"))
    assert shared["single_task"] == result["single_task"]
    assert saved == {run: os.stat(tmp_path / run / "ckpt-3.index").st_mtime_ns for run in saved}
    # A directory holding another config's run is not restored silently.
    changed = get_experiment("mmoe_synthetic").override_from_string(
        SMALL + ",task.model.architecture=ple,trainer.optimizer.learning_rate=0.1")
    with pytest.raises(ValueError, match="multi_task.*another config"):
        run_negative_transfer(changed, str(tmp_path))


@pytest.mark.slow
def test_baseline_trains_like_its_column_of_independent_columns(tmp_path):
    """Same data, order, optimizer and budget: only the initialisation can differ.

    Task y1's baseline, started from the weights of y1's column and tower in a jointly
    trained `single_task` network (no shared parameters), ends at the same weights.
    """
    params = get_experiment("mmoe_synthetic").override_from_string(
        SMALL + ",task.model.architecture=single_task,trainer.train_steps=6")
    strategy = tf.distribute.get_strategy()
    joint = Trainer(build_task(params), strategy, params.trainer, str(tmp_path / "joint"))
    single = single_task_config(params, "y1")
    task = build_task(single)
    task.arrays = _restrict_labels(joint.task.arrays, "y1")
    baseline = Trainer(task, strategy, single.trainer, str(tmp_path / "y1"))
    joint_columns = joint.model.network.get_layer("single_task")
    columns = baseline.model.network.get_layer("single_task")
    for weight, joint_weight in zip(columns.weights, joint_columns.weights, strict=True):
        weight.assign(joint_weight.numpy()[:1])  # column 0 is y1's
    joint_towers = joint.model.network.get_layer("towers")
    towers = baseline.model.network.get_layer("towers")
    for weight, joint_weight in zip(towers.weights, joint_towers.towers[0].weights
                                    + joint_towers.heads[0].weights, strict=True):
        weight.assign(joint_weight.numpy())
    joint.train(6)
    baseline.train(6)
    for weight, joint_weight in zip(columns.weights, joint_columns.weights, strict=True):
        np.testing.assert_allclose(weight.numpy(), joint_weight.numpy()[:1], rtol=1e-6,
                                   atol=1e-7)
    assert baseline.evaluate()["y1/mse"] == pytest.approx(joint.evaluate()["y1/mse"], rel=1e-6)
