"""Every loss weighting and gradient method on the synthetic MMoE data at correlation 0.5.

Trains the registered `mmoe_synthetic` experiment (Ma et al. 2018, sec. 3.2; MMoE of 8
experts, Adam 1e-3, batch 128) once per method and seed with `task.model.weighting` set to
the method, in-process with the project's `Trainer`, and reports:

- the final test loss: the sum of the two task MSEs on the 4,096 held-out examples (not the
  weighted objective, which differs between methods), mean and standard deviation over seeds,
  and its paired difference from static weighting (the seeds change the problem, so the
  spread over seeds is mostly the problems' difficulty; the paired difference and its
  standard error are the comparison);
- the wall time per training step relative to static weighting, per seed, and the same for
  the process CPU time (the work done, less sensitive to other processes on a shared
  machine). Methods are interleaved seed by seed, in an order rotated every seed, so that
  every method sees the same machine load; the first `STEPS_PER_LOOP` steps (tracing) are
  not timed; the timed steps include the per-loop TensorBoard summaries and one
  checkpoint, as in a real run.

Seed `s` sets the data problem (`task.data.problem_seed`), the initialisation and shuffling
and the method's randomness (`runtime.seed`); every method sees the same seeds.

Command (from the repository root):
    .venv/bin/python -m bench.weighting_synthetic [--seeds=5] [--train_steps=1500] \\
        [--methods=static,pcgrad] [--quick]

Output: one JSON object on stdout (logs go to stderr). The default run (8 methods x 5 seeds
x 1,500 steps, half the experiment's 3,000 so that it fits in 10 minutes on 2 busy CPU
cores) took 6.0 and 7.2 minutes at load averages 7-8 and 8-11; `--quick` (2 seeds, 200
steps) 1.4 minutes. See BUILD_NOTES.md for measured figures.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from bench._common import machine_info
from bench.mmoe_synthetic import summarize
from tf_mtml.configs import multitask_experiments  # noqa: F401  (registers experiments)
from tf_mtml.configs.registry import get_experiment
from tf_mtml.tasks.factory import build_task
from tf_mtml.train.loop import Trainer
from tf_mtml.weighting.factory import WEIGHTINGS

EXPERIMENT = "mmoe_synthetic"
CORRELATION = 0.5
STEPS_PER_LOOP = 100
QUICK = {"seeds": 2, "train_steps": 200}

FLAGS = flags.FLAGS


def run_once(method: str, seed: int, train_steps: int,
             steps_per_loop: int = STEPS_PER_LOOP) -> dict:
    """Trains one method on one seed; returns its test loss and wall / CPU seconds per step."""
    if train_steps <= steps_per_loop:
        raise ValueError(
            f"`train_steps` must exceed the {steps_per_loop} untimed warm-up steps "
            f"(`steps_per_loop`). Received: train_steps={train_steps}")
    config = get_experiment(EXPERIMENT)
    config.override({
        "task": {"data": {"correlation": CORRELATION, "problem_seed": seed},
                 "model": {"weighting": method}},
        "trainer": {"train_steps": train_steps, "steps_per_loop": steps_per_loop,
                    "checkpoint_interval": steps_per_loop * train_steps,
                    "validation_interval": steps_per_loop * train_steps},
        "runtime": {"seed": seed}})
    config.validate()
    keras.backend.clear_session()
    task = build_task(config)
    # The trainer draws a progress bar on an interactive stdout, which must carry only JSON.
    with tempfile.TemporaryDirectory() as model_dir, contextlib.redirect_stdout(sys.stderr):
        trainer = Trainer(task, tf.distribute.get_strategy(), config.trainer, model_dir=model_dir)
        trainer.train(steps_per_loop)
        start, cpu_start = time.perf_counter(), time.process_time()
        trainer.train(train_steps)
        timed = train_steps - steps_per_loop
        seconds_per_step = (time.perf_counter() - start) / timed
        cpu_seconds_per_step = (time.process_time() - cpu_start) / timed
        results = trainer.evaluate()
    names = [t.name for t in task.tasks]
    return {"test_loss": sum(results[f"{n}/loss"] for n in names),
            "task_mse": {n: results[f"{n}/mse"] for n in names},
            "seconds_per_step": seconds_per_step, "cpu_seconds_per_step": cpu_seconds_per_step,
            "train_steps": trainer.step}


def _paired(differences: Sequence[float]) -> dict:
    """`summarize` plus the standard error of the mean (0 for one value)."""
    stats = summarize(differences)
    return {**stats, "se": stats["std"] / math.sqrt(len(differences))}


def run_benchmark(seeds: Sequence[int], methods: Sequence[str], train_steps: int,
                  steps_per_loop: int = STEPS_PER_LOOP) -> dict:
    """Runs every method on every seed (seed-major); returns the report (JSON-ready)."""
    methods = list(methods)
    if "static" not in methods:
        raise ValueError(
            "`methods` must include 'static', the reference of the relative step times. "
            f"Received: methods={list(methods)}")
    info = machine_info()
    start = time.perf_counter()
    runs = {m: [] for m in methods}
    for i, seed in enumerate(seeds):
        for method in [*methods[i % len(methods):], *methods[:i % len(methods)]]:
            runs[method].append(run_once(method, seed, train_steps, steps_per_loop))
    report = {}
    for method, rs in runs.items():
        report[method] = {
            "test_loss": summarize([r["test_loss"] for r in rs]),
            "task_mse_mean": {n: float(np.mean([r["task_mse"][n] for r in rs]))
                              for n in rs[0]["task_mse"]},
            "test_loss_minus_static": _paired(
                [r["test_loss"] - s["test_loss"] for r, s in zip(rs, runs["static"],
                                                                 strict=True)]),
            "ms_per_step": summarize([1e3 * r["seconds_per_step"] for r in rs])}
        for key, name in (("seconds_per_step", "step_time_vs_static"),
                          ("cpu_seconds_per_step", "cpu_time_vs_static")):
            ratios = [r[key] / s[key] for r, s in zip(rs, runs["static"], strict=True)]
            # The median resists the odd run slowed down by other processes.
            report[method][name] = {**summarize(ratios), "median": float(np.median(ratios))}
    return {"benchmark": "weighting_synthetic",
            "data": f"{EXPERIMENT} (Ma et al. 2018, sec. 3.2), correlation {CORRELATION}",
            "metric": "final test loss = sum of the two task MSEs on the held-out set",
            "seeds": list(seeds), "train_steps": train_steps,
            "timed_steps_per_run": train_steps - steps_per_loop,
            "methods": report,
            "total_wall_s": time.perf_counter() - start,
            "machine": {**info, "load_average_at_end": os.getloadavg()}}


def define_flags() -> None:
    flags.DEFINE_integer("seeds", 5, "Number of seeds 0..N-1 per method.", lower_bound=1)
    flags.DEFINE_integer("train_steps", 1500, "Training steps per run (the experiment trains "
                         f"3000); the first {STEPS_PER_LOOP} are not timed.",
                         lower_bound=STEPS_PER_LOOP + 1)
    flags.DEFINE_list("methods", list(WEIGHTINGS), f"Methods, a subset of {WEIGHTINGS} "
                      "including static.")
    flags.DEFINE_bool("quick", False, f"A smoke run: {QUICK}, unless set explicitly.")


def main(argv) -> None:
    del argv
    values = {name: FLAGS[name].value for name in QUICK}
    if FLAGS.quick:
        values.update({k: v for k, v in QUICK.items() if not FLAGS[k].present})
    unknown = sorted(set(FLAGS.methods) - set(WEIGHTINGS))
    if unknown or "static" not in FLAGS.methods:
        raise app.UsageError(
            f"--methods must be names from {WEIGHTINGS}, including static. "
            f"Received: --methods={','.join(FLAGS.methods)}")
    report = run_benchmark(range(values["seeds"]), FLAGS.methods, values["train_steps"])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    define_flags()
    app.run(main)
