import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.configs import multitask_experiments  # noqa: F401
from tf_mtml.configs.registry import get_experiment
from tf_mtml.tasks.factory import build_task
from tf_mtml.tasks.multitask import MultiTaskLearningTask
from tf_mtml.train.loop import Trainer

SMALL = ("task.data.num_train_examples=512,task.data.num_eval_examples=128,"
         "task.data.global_batch_size=32,task.data.input_dim=8,trainer.steps_per_loop=10,"
         "trainer.checkpoint_interval=10,trainer.validation_interval=10")


def _params(extra=""):
    params = get_experiment("mmoe_synthetic").override_from_string(SMALL + extra)
    params.validate()
    return params


def _scalar_tags(directory):
    tags = set()
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags.update(v.tag for v in event.summary.value)
    return tags


class PoisonedTask(MultiTaskLearningTask):
    """Labels become huge: the squared error overflows from the first step."""

    def build_inputs(self, training, input_context=None):
        return super().build_inputs(training, input_context).map(
            lambda x, y: (x, {**y, "y1": y["y1"] * 0.0 + 1e30}))


def test_trains_resumes_and_summarises_with_one_trace(tmp_path):
    params = _params()
    trainer = Trainer(build_task(params), tf.distribute.get_strategy(), params.trainer,
                      str(tmp_path))
    logs = trainer.train(20)
    assert trainer.step == 20 and trainer.train_tracing_count == 1
    assert os.path.exists(tmp_path / "ckpt-10.index") and os.path.exists(tmp_path / "ckpt-20.index")
    assert {"loss", "y1/loss", "y1/mse", "y2/mse", "gate/y1/entropy"} <= set(logs)
    assert {"loss", "y1/mse", "gate/y2/expert0_weight", "y1/loss_weight"} <= _scalar_tags(
        tmp_path / "train")
    results = trainer.evaluate()
    assert {"loss", "y1/mse", "y2/mse"} <= set(results)
    assert not any(k.startswith("gate/") for k in results)

    resumed = Trainer(build_task(params), tf.distribute.get_strategy(), params.trainer,
                      str(tmp_path))
    assert resumed.restore() == 20
    for a, b in zip(resumed.model.weights, trainer.model.weights, strict=True):
        assert (a.numpy() == b.numpy()).all()
    resumed.train(30)
    assert resumed.step == 30 and resumed.train_tracing_count == 1


def test_resumed_run_continues_the_input_stream_and_matches_an_uninterrupted_run(tmp_path):
    # 512 examples / batch 32 = 16 steps per epoch, so step 20 is mid-epoch after the resume.
    params = _params()
    whole = Trainer(build_task(params), tf.distribute.get_strategy(), params.trainer,
                    str(tmp_path / "whole"))
    whole.train(30)
    first = Trainer(build_task(params), tf.distribute.get_strategy(), params.trainer,
                    str(tmp_path / "split"))
    first.train(20)
    second = Trainer(build_task(params), tf.distribute.get_strategy(), params.trainer,
                     str(tmp_path / "split"))
    second.train(30)
    assert second.step == 30
    for a, b in zip(second.model.weights, whole.model.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_non_finite_loss_stops_without_checkpointing(tmp_path):
    params = _params()
    good = Trainer(build_task(params), tf.distribute.get_strategy(), params.trainer,
                   str(tmp_path))
    good.train(10)
    poisoned = Trainer(PoisonedTask(params.task), tf.distribute.get_strategy(), params.trainer,
                       str(tmp_path))
    with pytest.raises(FloatingPointError, match=r"step 11 .*\[.y1.\].*ckpt-10"):
        poisoned.train(40)
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-10")
    assert not glob.glob(str(tmp_path / "ckpt-20*"))


def test_optimizer_rate_decays_in_stairs():
    from tf_mtml.configs.experiment import OptimizerConfig
    from tf_mtml.train.loop import build_optimizer

    optimizer = build_optimizer(OptimizerConfig(learning_rate=0.1, decay_steps=3, decay_rate=0.5))
    schedule = optimizer._learning_rate  # the schedule object, evaluated per iteration below
    rates = [float(schedule(step)) for step in range(8)]
    assert rates == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025] * 2)
    constant = build_optimizer(OptimizerConfig(learning_rate=0.1))
    assert float(constant.learning_rate) == pytest.approx(0.1)


def test_a_checkpoint_without_input_position_resumes_by_skipping(tmp_path):
    # What a mirrored, multi-worker or TPU run writes (its iterator cannot be checkpointed),
    # resumed here under the default strategy: the stream must skip the 20 trained steps.
    params = _params()
    whole = Trainer(build_task(params), tf.distribute.get_strategy(), params.trainer,
                    str(tmp_path / "whole"))
    whole.train(30)
    first = Trainer(build_task(params), tf.distribute.get_strategy(), params.trainer,
                    str(tmp_path / "first"))
    first.train(20)
    path = tf.train.Checkpoint(**first._checkpointed()).write(str(tmp_path / "split" / "ckpt-20"))
    tf.compat.v1.train.update_checkpoint_state(str(tmp_path / "split"), path)
    assert not any(name.startswith("train_iterator") for name, _ in tf.train.list_variables(path))
    resumed = Trainer(build_task(params), tf.distribute.get_strategy(), params.trainer,
                      str(tmp_path / "split"))
    resumed.train(30)
    for a, b in zip(resumed.model.weights, whole.model.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
