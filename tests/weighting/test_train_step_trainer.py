"""Short Trainer runs of the multi-task task family under every weighting."""

import math
import tempfile

import pytest
import tensorflow as tf

from tf_mtml.configs import multitask_experiments  # noqa: F401  (registers experiments)
from tf_mtml.configs.registry import get_experiment
from tf_mtml.tasks.factory import build_task
from tf_mtml.train.loop import Trainer
from tf_mtml.weighting.factory import WEIGHTINGS


def _trainer(weighting, model_dir):
    params = get_experiment("mmoe_synthetic").override_from_string(
        "task.data.num_train_examples=256,task.data.num_eval_examples=64,"
        "task.data.global_batch_size=32,task.data.input_dim=8,task.model.num_experts=2,"
        "trainer.steps_per_loop=10,trainer.checkpoint_interval=20,"
        "trainer.validation_interval=20,trainer.optimizer.name=sgd,"
        f"trainer.optimizer.learning_rate=0.05,task.model.weighting={weighting},"
        "task.model.gradient_diagnostics=true")
    params.validate()
    return Trainer(build_task(params), tf.distribute.get_strategy(), params.trainer, model_dir)


@pytest.mark.slow
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_trainer_runs_every_weighting(weighting):
    with tempfile.TemporaryDirectory() as model_dir:
        trainer = _trainer(weighting, model_dir)
        start = trainer.evaluate()
        logs = trainer.train(20)
        end = trainer.evaluate()
    assert trainer.train_tracing_count == 1
    keys = {"diagnostics/cos/y1__y2", "diagnostics/loss_ratio/y1", "diagnostics/loss_ratio/y2"}
    assert keys <= set(logs) and all(math.isfinite(logs[k]) for k in keys)
    assert -1 <= logs["diagnostics/cos/y1__y2"] <= 1
    assert end["y1/loss"] + end["y2/loss"] < 0.8 * (start["y1/loss"] + start["y2/loss"])


def test_dwa_period_defaults_to_one_epoch():
    with tempfile.TemporaryDirectory() as model_dir:
        trainer = _trainer("dwa", model_dir)
    assert trainer.model.weighting.period_steps == 256 // 32
