"""The non-finite guard: bad steps are never applied; `stop` raises, `skip` goes on."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.configs import multitask_experiments  # noqa: F401
from tf_mtml.configs.registry import get_experiment
from tf_mtml.tasks.multitask import MultiTaskLearningTask
from tf_mtml.train.loop import Trainer
from tf_mtml.train.nonfinite import NonFiniteGuard, build_guarded_optimizer

SMALL = ("task.data.num_train_examples=512,task.data.num_eval_examples=128,"
         "task.data.global_batch_size=32,task.data.input_dim=8,trainer.steps_per_loop=10,"
         "trainer.checkpoint_interval=10,trainer.validation_interval=10")
BAD_INDEX = 14  # the 15th batch of the stream, i.e. step 15


def _params(extra=""):
    params = get_experiment("mmoe_synthetic").override_from_string(SMALL + extra)
    params.validate()
    return params


class OneBadBatchTask(MultiTaskLearningTask):
    """Batch `BAD_INDEX` of the training stream has y2 labels whose loss overflows (or is
    dropped)."""

    drop = False

    def build_inputs(self, training, input_context=None):
        dataset = super().build_inputs(training, input_context)
        if not training:
            return dataset
        indexed = dataset.enumerate()
        if self.drop:
            return indexed.filter(lambda i, batch: i != BAD_INDEX).map(lambda i, batch: batch)

        def poison(i, batch):
            x, y = batch
            # Finite labels (NaN means missing, inf is rejected) whose squared error overflows.
            y2 = tf.where(i == BAD_INDEX, tf.fill(tf.shape(y["y2"]), np.float32(1e30)), y["y2"])
            return x, {**y, "y2": y2}

        return indexed.map(poison)


class DroppedBatchTask(OneBadBatchTask):
    drop = True


def _weights(trainer):
    return [w.numpy() for w in trainer.model.weights]


def test_stop_names_the_step_and_task_and_applies_nothing(tmp_path):
    params = _params()
    trainer = Trainer(OneBadBatchTask(params.task), tf.distribute.get_strategy(), params.trainer,
                      str(tmp_path))
    trainer.train(10)
    at_ten = _weights(trainer)
    expected = r"at step 15 .*\['y2'\].*ckpt-10.*nan_policy=skip"
    with pytest.raises(FloatingPointError, match=expected):
        trainer.train(30)
    # The loop broke at the bad step: 5 good steps (11-15 minus the bad one) ran, none after.
    assert trainer.step == 15
    assert int(trainer.optimizer.iterations.numpy()) == 14
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-10")
    assert all(np.all(np.isfinite(w)) for w in _weights(trainer))
    assert any(not np.array_equal(a, b) for a, b in zip(at_ten, _weights(trainer), strict=True))


def test_skip_equals_a_run_without_the_bad_batch(tmp_path):
    # Skipping leaves weights and optimizer state untouched, so 30 steps with one bad batch
    # equal 29 steps on the same stream with that batch removed (Adam's bias correction
    # included: the optimizer's iteration count does not advance on the skipped step).
    params = _params(",trainer.nan_policy=skip")
    skipped = Trainer(OneBadBatchTask(params.task), tf.distribute.get_strategy(),
                      params.trainer, str(tmp_path / "skip"))
    skipped.train(30)
    reference = Trainer(DroppedBatchTask(params.task), tf.distribute.get_strategy(),
                        params.trainer, str(tmp_path / "reference"))
    reference.train(29)
    assert skipped.step == 30 and int(skipped.optimizer.iterations.numpy()) == 29
    for a, b in zip(_weights(skipped), _weights(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert tf.train.latest_checkpoint(str(tmp_path / "skip")).endswith("ckpt-30")


def test_skip_keeps_stateful_weighting_state_finite(tmp_path):
    # DWA accumulates the global task losses: an infinite one must not enter its history.
    params = _params(",trainer.nan_policy=skip,task.model.weighting=dwa")
    trainer = Trainer(OneBadBatchTask(params.task), tf.distribute.get_strategy(),
                      params.trainer, str(tmp_path))
    trainer.train(30)
    for variable in trainer.model.weighting.variables:
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(variable))), variable.path


def test_guarded_optimizer_applies_finite_and_skips_non_finite_steps():
    step = tf.Variable(0, dtype=tf.int64)
    guard = NonFiniteGuard("skip", step)
    variable = tf.Variable([1.0, 2.0])
    optimizer = build_guarded_optimizer(keras.optimizers.SGD, guard, learning_rate=0.5)
    optimizer.build([variable])
    optimizer.apply_gradients([(tf.constant([1.0, -2.0]), variable)])
    np.testing.assert_allclose(variable.numpy(), [0.5, 3.0])
    step.assign(6)
    optimizer.apply_gradients([(tf.constant([np.inf, 1.0], tf.float32), variable)])
    np.testing.assert_allclose(variable.numpy(), [0.5, 3.0])
    assert int(guard.bad_steps.numpy()) == 1 and int(guard.last_bad_step.numpy()) == 7
    assert int(optimizer.iterations.numpy()) == 1
    assert type(optimizer).__name__ == "SGD" and isinstance(optimizer, keras.optimizers.SGD)


def test_guard_rejects_unknown_policy():
    with pytest.raises(ValueError, match=r"policy='ignore'"):
        NonFiniteGuard("ignore", tf.Variable(0, dtype=tf.int64))


def test_config_rejects_unknown_policy():
    from tf_mtml.configs.base import ConfigError

    with pytest.raises(ConfigError, match=r"nan_policy=warn.*\('stop', 'skip'\)"):
        _params(",trainer.nan_policy=warn")


MIRRORED_SCRIPT = textwrap.dedent("""
    import numpy as np, keras, tensorflow as tf
    from tf_mtml.train.distribute import get_strategy
    from tf_mtml.train.nonfinite import NonFiniteGuard, build_guarded_optimizer

    strategy = get_strategy("mirrored", num_cpu_devices=2)
    with strategy.scope():
        step = tf.Variable(0, dtype=tf.int64, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        guard = NonFiniteGuard("skip", step)
        w = tf.Variable([1.0, 2.0])
        opt = build_guarded_optimizer(keras.optimizers.SGD, guard, learning_rate=0.5)
        opt.build([w])

    @tf.function
    def apply(poison_replica):
        def fn():
            rid = tf.distribute.get_replica_context().replica_id_in_sync_group
            g = tf.constant([1.0, 1.0])
            g = tf.where(tf.equal(rid, poison_replica), g * np.float32("nan"), g)
            opt.apply_gradients([(g, w)])
        strategy.run(fn)

    apply(tf.constant(1))   # NaN on the second replica only: skipped on both
    print("AFTER_BAD", w.numpy().tolist(), int(guard.bad_steps.numpy()))
    apply(tf.constant(-1))  # finite everywhere: the summed gradient 2.0 is applied
    print("AFTER_GOOD", w.numpy().tolist(), int(opt.iterations.numpy()))
""")


@pytest.mark.slow
def test_mirrored_nan_on_one_replica_skips_the_step_on_all():
    result = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert lines["AFTER_BAD"] == "[1.0, 2.0] 1"
    assert lines["AFTER_GOOD"] == "[0.0, 1.0] 1"  # replica gradients are summed
