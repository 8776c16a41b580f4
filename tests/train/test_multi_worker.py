"""Two local worker processes under `multi_worker_mirrored` (TF_CONFIG on 127.0.0.1) run the
real trainer and end with identical weights, equal to one process with the same global batch.
"""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOOPS = "trainer.steps_per_loop=10,trainer.checkpoint_interval=10,trainer.validation_interval=10"
# Second-order MAML on sinusoids, meta-batch 4 (2 episodes per worker); an MMoE on the
# synthetic data, global batch 32 (16 rows per worker). 20 steps in 2 loops.
OVERRIDES = {
    "maml_sinusoid": "task.data.meta_batch_size=4,task.data.eval_episodes=8," + LOOPS,
    "mmoe_synthetic": "task.data.num_train_examples=512,task.data.num_eval_examples=128,"
                      "task.data.global_batch_size=32,task.data.input_dim=8," + LOOPS,
}
STEPS = 20


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _command(experiment, model_dir, strategy, steps=STEPS, extra=""):
    return [sys.executable, "-m", "trainers.train", f"--experiment={experiment}",
            f"--model_dir={model_dir}", "--mode=train", f"--train_steps={steps}",
            f"--strategy={strategy}", f"--params_override={OVERRIDES[experiment]}{extra}"]


def _model_variables(directory):
    """Weights and optimizer slots (TF stores a variable once, often under `optimizer/`)."""
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(directory)))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith(("model", "optimizer"))}


def _start_workers(experiment, model_dir, steps=STEPS, extra=""):
    """Two `trainers.train` processes under `multi_worker_mirrored`, on 127.0.0.1."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
               "TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": index}})}
        workers.append(subprocess.Popen(
            _command(experiment, model_dir, "multi_worker_mirrored", steps, extra), cwd=REPO,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return workers


def _finish(workers):
    outputs = [w.communicate(timeout=400) for w in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-4000:]
    return [stderr for _, stderr in outputs]


def _run_single(experiment, model_dir, steps=STEPS, extra=""):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    single = subprocess.run(_command(experiment, model_dir, "default", steps, extra), cwd=REPO,
                            env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True,
                            text=True, timeout=400)
    assert single.returncode == 0, single.stderr[-4000:]


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(OVERRIDES))
def test_two_workers_match_each_other_and_a_single_process(tmp_path, experiment):
    _finish(_start_workers(experiment, tmp_path / "multi"))
    _run_single(experiment, tmp_path / "single")

    chief = _model_variables(tmp_path / "multi")
    worker = _model_variables(tmp_path / "multi" / "workers" / "worker_1")
    reference = _model_variables(tmp_path / "single")
    assert tf.train.latest_checkpoint(str(tmp_path / "multi")).endswith(f"ckpt-{STEPS}")
    assert set(chief) == set(worker) == set(reference) and len(chief) >= 6
    for name, value in reference.items():
        np.testing.assert_array_equal(worker[name], chief[name], err_msg=name)
        np.testing.assert_allclose(chief[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    # Training moved the weights between the two checkpoints, so equality is not trivial.
    at_ten = tf.train.load_checkpoint(str(tmp_path / "single" / "ckpt-10"))
    assert any(not np.array_equal(at_ten.get_tensor(name), value)
               for name, value in reference.items())
    # Only the chief writes summaries.
    assert os.path.isdir(tmp_path / "multi" / "train")
    assert not os.path.exists(tmp_path / "multi" / "workers" / "worker_1" / "train")


@pytest.mark.slow
def test_sigterm_to_one_worker_checkpoints_both_at_one_step_and_they_resume(tmp_path):
    # SGD: without Adam's normalisation, the summation-order differences between the
    # all-reduce and one device stay at rounding level over the 200 steps.
    steps, sgd = 200, ",trainer.optimizer.name=sgd,trainer.optimizer.learning_rate=0.05"
    multi = tmp_path / "multi"
    workers = _start_workers("mmoe_synthetic", multi, steps, sgd)
    deadline = time.time() + 300
    while not glob.glob(str(multi / "train" / "events.out.tfevents.*")):  # first loop done
        assert all(w.poll() is None for w in workers), workers[0].communicate()[1][-3000:]
        assert time.time() < deadline, "the workers wrote no summary within 300 s"
        time.sleep(0.05)
    workers[1].send_signal(signal.SIGTERM)  # the non-chief only: the chief learns it by all-reduce
    stderrs = _finish(workers)
    chief_step = int(tf.train.latest_checkpoint(str(multi)).rsplit("-", 1)[1])
    worker_step = int(tf.train.latest_checkpoint(str(multi / "workers" / "worker_1"))
                      .rsplit("-", 1)[1])
    assert chief_step == worker_step and 10 <= chief_step < steps and chief_step % 10 == 0
    assert all(f"at step {chief_step}" in stderr for stderr in stderrs)

    _finish(_start_workers("mmoe_synthetic", multi, steps, sgd))  # the same command resumes
    _run_single("mmoe_synthetic", tmp_path / "single", steps, sgd)
    chief, reference = _model_variables(multi), _model_variables(tmp_path / "single")
    assert tf.train.latest_checkpoint(str(multi)).endswith(f"ckpt-{steps}")
    for name, value in reference.items():
        np.testing.assert_allclose(chief[name], value, rtol=1e-4, atol=1e-5, err_msg=name)
