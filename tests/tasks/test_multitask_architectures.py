"""The `task.model.architecture` choices of tf_mtml.tasks.multitask, trained by the Trainer."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.configs import multitask_experiments  # noqa: F401  (registers experiments)
from tf_mtml.configs.base import ConfigError
from tf_mtml.configs.multitask import ARCHITECTURES
from tf_mtml.configs.registry import get_experiment
from tf_mtml.layers import CGC, PLE, CrossStitchNetwork, MMoE, SharedBottom, SoftSharing
from tf_mtml.tasks.factory import build_task
from tf_mtml.train.loop import Trainer

SMALL = ("task.data.num_train_examples=256,task.data.num_eval_examples=64,"
         "task.data.global_batch_size=32,task.data.input_dim=6,task.model.expert_units=[4],"
         "task.model.num_experts=3,task.model.tower_units=[3],trainer.steps_per_loop=3,"
         "trainer.checkpoint_interval=3,trainer.validation_interval=3")

LAYERS = {"mmoe": MMoE, "omoe": MMoE, "shared_bottom": SharedBottom, "cgc": CGC, "ple": PLE,
          "cross_stitch": CrossStitchNetwork, "soft_sharing": SoftSharing,
          "single_task": SoftSharing}
GATE_KEYS = {"mmoe": "gate/y2/expert2_weight", "omoe": "gate/shared/expert2_weight",
             "cgc": "gate/y2/expert3_weight", "ple": "gate/level0/shared/expert5_weight"}


def _params(extra=""):
    params = get_experiment("mmoe_synthetic").override_from_string(SMALL + extra)
    params.validate()
    return params


def test_every_architecture_has_a_layer_here():
    assert set(LAYERS) == set(ARCHITECTURES)


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_trainer_trains_and_evaluates_each_architecture(architecture, tmp_path):
    params = _params(f",task.model.architecture={architecture},task.model.expert_dropout=0.2")
    trainer = Trainer(build_task(params), tf.distribute.get_strategy(), params.trainer,
                      str(tmp_path))
    network = trainer.model.network
    layer = network.get_layer(architecture)
    assert type(layer) is LAYERS[architecture]
    logs = trainer.train(3)
    assert trainer.step == 3 and np.isfinite(logs["loss"])
    assert {"y1/mse", "y2/mse"} <= set(logs)
    if architecture in GATE_KEYS:
        assert 0.0 < logs[GATE_KEYS[architecture]] < 1.0
    else:
        assert not any(key.startswith("gate/") for key in logs)
    results = trainer.evaluate()
    assert np.isfinite(results["loss"]) and {"y1/mse", "y2/mse"} <= set(results)


def test_architectures_are_built_from_their_config_fields():
    params = _params(",task.model.architecture=ple,task.model.num_task_experts=3,"
                     "task.model.num_shared_experts=1,task.model.ple_num_levels=3")
    ple = build_task(params).build_network().get_layer("ple")
    assert ple.num_levels == 3 and ple.levels[0].num_experts == 2 * 3 + 1
    assert ple.levels[-1].task_names == ("y1", "y2")

    params = _params(",task.model.architecture=omoe")
    omoe = build_task(params).build_network().get_layer("omoe")
    assert omoe.num_tasks == 1 and omoe.num_experts == 3

    params = _params(",task.model.architecture=cross_stitch,"
                     "task.model.cross_stitch_alpha_same=0.7")
    stitch = build_task(params).build_network().get_layer("cross_stitch")
    np.testing.assert_allclose(np.asarray(stitch.stitches[0].alpha), [[0.7, 0.3], [0.3, 0.7]])

    for architecture, l2 in (("soft_sharing", 0.25), ("single_task", 0.0)):
        params = _params(f",task.model.architecture={architecture},"
                         "task.model.soft_sharing_l2=0.25")
        assert build_task(params).build_network().get_layer(architecture).l2 == l2


def test_soft_sharing_penalty_is_part_of_the_training_loss():
    params = _params(",task.model.architecture=soft_sharing,task.model.soft_sharing_l2=0.5")
    task = build_task(params)
    model = task.build_model()
    features, labels = task.arrays["train"]
    x = {k: v[:32] for k, v in features.items()}
    y = {k: v[:32] for k, v in labels.items()}
    y_pred = model(x, training=True)
    total = float(model.compute_loss(x, y, y_pred))
    task_losses = sum(float(v) for v in model.task_losses(y, y_pred).values())
    penalty = 0.5 * float(model.network.get_layer("soft_sharing").penalty())
    assert penalty > 0.0
    np.testing.assert_allclose(total, task_losses + penalty, rtol=1e-5)


def test_after_train_loop_warns_of_polarised_gates(caplog):
    task = build_task(_params())
    logs = {"loss": 0.1, "gate/y1/expert0_weight": 0.97, "gate/y1/expert1_weight": 0.03,
            "gate/y2/expert0_weight": 0.5, "gate/y2/expert1_weight": 0.5}
    with caplog.at_level(logging.WARNING):
        messages = task.after_train_loop(logs)
    assert len(messages) == 1 and messages[0].startswith("Gate 'y1' is polarised")
    assert messages[0] in caplog.text
    assert task.after_train_loop({"loss": 0.1}) == []


def test_cross_stitch_needs_two_tasks():
    params = _params(",task.model.architecture=cross_stitch")
    params.task.tasks = params.task.tasks[:1]
    params.validate()
    with pytest.raises(ValueError, match="num_tasks=1"):
        build_task(params).build_network()


@pytest.mark.parametrize(
    "override, match",
    [
        ("task.model.architecture=moe", r"architecture=moe.*'ple'"),
        ("task.model.num_task_experts=0", "num_task_experts=0"),
        ("task.model.num_shared_experts=0", "num_shared_experts=0"),
        ("task.model.ple_num_levels=0", "ple_num_levels=0"),
        ("task.model.cross_stitch_alpha_same=1.5", "cross_stitch_alpha_same=1.5"),
        ("task.model.soft_sharing_l2=-0.1", "soft_sharing_l2=-0.1"),
        ("task.model.soft_sharing_l2=.inf", "soft_sharing_l2=inf"),
    ],
)
def test_invalid_architecture_config_raises(override, match):
    params = get_experiment("mmoe_synthetic").override_from_string(override)
    with pytest.raises(ConfigError, match=match):
        params.validate()


def test_networks_round_trip_through_keras_files(tmp_path):
    x = {"features": np.random.default_rng(0).normal(size=(4, 6)).astype("float32")}
    for architecture in ("ple", "cross_stitch", "soft_sharing"):
        network = build_task(_params(f",task.model.architecture={architecture}")).build_network()
        path = tmp_path / f"{architecture}.keras"
        network.save(path)
        loaded = keras.models.load_model(path)
        for name, value in network(x).items():
            np.testing.assert_array_equal(np.asarray(loaded(x)[name]), np.asarray(value))

