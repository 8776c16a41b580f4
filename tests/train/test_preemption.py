"""SIGTERM: checkpoint at the end of the loop, stop cleanly, resume to the same weights."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tf_mtml.configs import multitask_experiments  # noqa: F401
from tf_mtml.configs.registry import get_experiment
from tf_mtml.tasks.factory import build_task
from tf_mtml.tasks.multitask import MultiTaskLearningTask
from tf_mtml.train.loop import Trainer
from tf_mtml.train.preemption import PreemptionWatcher, TrainingPreempted

SMALL = ("task.data.num_train_examples=512,task.data.num_eval_examples=128,"
         "task.data.global_batch_size=32,task.data.input_dim=8,trainer.steps_per_loop=5,"
         "trainer.checkpoint_interval=100,trainer.validation_interval=100")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SignalledTask(MultiTaskLearningTask):
    """Sends this process SIGTERM after the loop that ends at step `signal_at`."""

    signal_at = 20

    def after_train_loop(self, logs):
        del logs
        if self.trainer_step() == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)


def _trainer(task_class, model_dir, params):
    task = task_class(params.task)
    trainer = Trainer(task, tf.distribute.get_strategy(), params.trainer, str(model_dir))
    task.trainer_step = lambda: trainer.step
    return trainer


def test_sigterm_checkpoints_at_the_loop_end_and_resume_matches(tmp_path):
    params = get_experiment("mmoe_synthetic").override_from_string(SMALL)
    signalled = _trainer(SignalledTask, tmp_path / "split", params)
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingPreempted, match=r"step 20.*ckpt-20.*Rerun") as info:
        signalled.train(50)
    assert info.value.step == 20 and info.value.checkpoint.endswith("ckpt-20")
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is restored
    resumed = _trainer(MultiTaskLearningTask, tmp_path / "split", params)
    resumed.train(50)
    whole = Trainer(build_task(params), tf.distribute.get_strategy(), params.trainer,
                    str(tmp_path / "whole"))
    whole.train(50)
    for a, b in zip(resumed.model.weights, whole.model.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def test_watcher_sets_the_flag_and_restores_the_handler():
    previous = signal.getsignal(signal.SIGTERM)
    with PreemptionWatcher() as watcher:
        assert signal.getsignal(signal.SIGTERM) is not previous
        assert not watcher.received
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler runs between bytecodes of the main thread
        assert watcher.received
        assert watcher.any_worker_received(tf.distribute.get_strategy())
    assert signal.getsignal(signal.SIGTERM) is previous


def _train_command(model_dir, steps):
    return [sys.executable, "-m", "trainers.train", "--experiment=mmoe_synthetic",
            f"--model_dir={model_dir}", "--mode=train", f"--train_steps={steps}",
            "--params_override=" + SMALL + ",runtime.deterministic=true"]


def _final_variables(model_dir):
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(model_dir)))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith(("model", "optimizer"))}


@pytest.mark.slow
def test_trainer_process_exits_0_on_sigterm_and_a_restart_finishes_identically(tmp_path):
    steps = 1000
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    split = tmp_path / "split"
    process = subprocess.Popen(_train_command(split, steps), cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not os.path.exists(split / "ckpt-100.index"):  # running, handler installed
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, "no first checkpoint within 240 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr[-3000:]
    preempted_at = int(tf.train.latest_checkpoint(str(split)).rsplit("-", 1)[1])
    assert 100 <= preempted_at < steps and preempted_at % 5 == 0
    assert f"preempted (termination signal) at step {preempted_at}" in stderr

    restart = subprocess.run(_train_command(split, steps), cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert restart.returncode == 0, restart.stderr[-3000:]
    assert f"(step {preempted_at})" in restart.stderr  # "Restored .../ckpt-N (step N)."
    whole = subprocess.run(_train_command(tmp_path / "whole", steps), cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]
    resumed, uninterrupted = _final_variables(split), _final_variables(tmp_path / "whole")
    assert set(resumed) == set(uninterrupted) and len(resumed) > 10
    for name, value in uninterrupted.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_watcher_is_reentrant():
    previous = signal.getsignal(signal.SIGTERM)
    watcher = PreemptionWatcher()
    with watcher:
        installed = signal.getsignal(signal.SIGTERM)
        with watcher:
            assert signal.getsignal(signal.SIGTERM) is installed
        assert signal.getsignal(signal.SIGTERM) is installed  # still watching
    assert signal.getsignal(signal.SIGTERM) is previous
