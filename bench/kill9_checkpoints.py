"""kill -9 at random moments never leaves a checkpoint that fails to restore.

Each trial starts the real trainer (`python -m trainers.train`, `mmoe_synthetic`, checkpoint
every 2 steps, so a checkpoint is being written a large part of the time) on the SAME model_dir,
waits until it has written a new checkpoint, sleeps a random 0-300 ms and sends SIGKILL (every
other trial instead waits until a checkpoint write has begun and kills 0-2 ms into it). Then
the latest checkpoint must (1) read completely (every tensor, which checks the data file
CRCs) and (2) restore into a fresh Trainer the way a resumed run does (model, optimizer, step
and input-iterator position), at the step its name says. The next trial resumes from it, so
every trial also exercises a resume after a hard kill. A trial whose kill landed while
TensorFlow was writing a checkpoint leaves its temporary shard directory (`ckpt-N_temp`)
behind; the report counts them (`killed_mid_write`) to show the window was hit, and checks
that the next start removed them (`leftovers_not_removed` must be 0).

Command (from the repository root):
    .venv/bin/python -m bench.kill9_checkpoints [--trials=10] [--seed=0]

Output: one JSON object on stdout. About 10 s per trial on 2 shared CPU cores.
"""

from __future__ import annotations

import glob
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from absl import app, flags

from bench._common import machine_info
from tf_mtml.configs import multitask_experiments  # noqa: F401  (registers experiments)
from tf_mtml.configs.registry import get_experiment
from tf_mtml.tasks.factory import build_task
from tf_mtml.train.loop import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = ("task.data.num_train_examples=2048,task.data.num_eval_examples=128,"
             "task.data.global_batch_size=32,task.data.input_dim=64,trainer.steps_per_loop=2,"
             "trainer.checkpoint_interval=2,trainer.validation_interval=2,trainer.max_to_keep=2")

FLAGS = flags.FLAGS


def _latest_step(model_dir: str) -> int:
    path = tf.train.latest_checkpoint(model_dir)
    return int(path.rsplit("-", 1)[1]) if path else -1


def check_restorable(model_dir: str) -> dict:
    """Reads every tensor of the latest checkpoint and restores it as a resumed run does."""
    path = tf.train.latest_checkpoint(model_dir)
    if path is None:
        return {"checkpoint": None, "restored_step": None, "ok": True}
    reader = tf.train.load_checkpoint(path)
    finite = all(np.all(np.isfinite(reader.get_tensor(name)))
                 for name, dtype in reader.get_variable_to_dtype_map().items()
                 if dtype.is_floating)
    params = get_experiment("mmoe_synthetic").override_from_string(OVERRIDES)
    trainer = Trainer(build_task(params), tf.distribute.get_strategy(), params.trainer,
                      model_dir)
    trainer._train_iterator()  # noqa: SLF001  (restore the input position too, as train does)
    status = trainer.checkpoint.restore(path)
    status.assert_existing_objects_matched()
    step = trainer.step
    return {"checkpoint": os.path.basename(path), "restored_step": step,
            "ok": finite and step == int(path.rsplit("-", 1)[1])}


def run_trial(model_dir: str, rng: random.Random, during_write: bool,
              timeout_s: float = 240) -> dict:
    """Starts the trainer and kills it with SIGKILL at a random moment.

    With `during_write`, the moment is 0-2 ms after TensorFlow starts writing a checkpoint
    (its `ckpt-N_temp` directory appears); otherwise 0-300 ms after a new checkpoint is done.
    """
    before = _latest_step(model_dir)
    pattern = os.path.join(model_dir, "*_temp*")
    temps_before = set(glob.glob(pattern))
    command = [sys.executable, "-m", "trainers.train", "--experiment=mmoe_synthetic",
               f"--model_dir={model_dir}", "--mode=train", "--train_steps=1000000",
               f"--params_override={OVERRIDES}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    # stderr to a file: a pipe nobody reads while the trainer runs would fill and block it.
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=log, text=True)
    deadline = time.time() + timeout_s

    def started() -> bool:
        if during_write:
            return _latest_step(model_dir) > before and bool(set(glob.glob(pattern))
                                                             - temps_before)
        return _latest_step(model_dir) > before

    while not started():
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"The trainer exited early: {log.read()[-2000:]}")
        if time.time() > deadline:
            process.kill()
            raise TimeoutError(f"No new checkpoint in {model_dir} within {timeout_s} s.")
        time.sleep(0.0005 if during_write else 0.01)
    # The restarted trainer removes partial writes of earlier kills before it resumes.
    leftovers_removed = not any(os.path.exists(p) for p in temps_before) if temps_before \
        else None
    delay = rng.uniform(0.0, 0.002 if during_write else 0.3)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    log.close()
    new_temps = set(glob.glob(pattern)) - temps_before
    return {"during_write": during_write, "delay_s": round(delay, 4), "step_before": before,
            "killed_mid_write": bool(new_temps), "leftovers_removed": leftovers_removed,
            **check_restorable(model_dir)}


def run_benchmark(trials: int, seed: int) -> dict:
    rng = random.Random(seed)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as model_dir:
        results = [run_trial(model_dir, rng, during_write=i % 2 == 1) for i in range(trials)]
    return {"benchmark": "kill9_checkpoints", "trials": trials, "seed": seed,
            "restorable": sum(r["ok"] for r in results),
            "killed_mid_write": sum(r["killed_mid_write"] for r in results),
            "leftovers_not_removed": sum(r["leftovers_removed"] is False for r in results),
            "results": results, "seconds": round(time.perf_counter() - start, 1),
            "machine": machine_info()}


def main(argv) -> None:
    del argv
    print(json.dumps(run_benchmark(FLAGS.trials, FLAGS.seed), indent=2))


if __name__ == "__main__":
    flags.DEFINE_integer("trials", 10, "Number of kill -9 trials.")
    flags.DEFINE_integer("seed", 0, "Seeds the random kill delays.")
    app.run(main)
