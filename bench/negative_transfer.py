"""Negative transfer of each multi-task architecture on the MMoE synthetic data.

For every seed, each architecture of the `mmoe_synthetic` experiment (at `--correlation`) is
trained and compared with single-task baselines, one per task, trained with the same budget:
same examples in the same order, seed, optimizer and number of steps
(`tf_mtml.train.negative_transfer`). The baselines do not depend on the architecture, so they
are trained once per seed and shared. The figure of merit is Δm% (Maninis et al. 2019,
Vandenhende et al. 2021): the mean over tasks of the relative test-MSE reduction over the
baseline, in percent; Δm% < 0 is negative transfer.

`single_task` is the control: one independent column per task trained jointly. From the
same initial weights its columns train exactly like the baselines (a test checks it), so
its Δm% is seed noise (initialisation only) at the given budget.

Seed `s` sets the data problem (`task.data.problem_seed`) and the initialisation and
shuffling (`runtime.seed`).

Command (from the repository root):
    .venv/bin/python -m bench.negative_transfer [--seeds=2] [--train_steps=1000] \\
        [--correlation=0.5] [--architectures=mmoe,shared_bottom,ple,single_task] [--quick]

Output: one JSON object on stdout (logs go to stderr). Runtime on 2 shared CPU cores (load
average ~9) with the defaults (4 architectures + 2 baselines, 1,000 steps, 2 seeds): 151 s
measured; `--quick` (1 seed, mmoe and ple, 100 steps): about 30 seconds.

Measured with the defaults (TF 2.21, Keras 3.15), Δm% at seeds 0 / 1: mmoe +29.5 / +16.4,
shared_bottom +84.2 / +44.7, ple +62.2 / +60.9, single_task (control) +28.2 / +23.6. At
1,000 steps nothing has converged (baseline test MSE 0.5-1.4; noise floor 0.02), and the
control says that about +25% is the initialisation luck of these baselines; only
shared_bottom and ple clear it (their wide shared layers learn faster). For conclusions, run
more seeds and `--train_steps=3000`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence

import keras
import numpy as np
from absl import app, flags

from bench._common import machine_info
from tf_mtml.configs import multitask_experiments  # noqa: F401  (registers experiments)
from tf_mtml.configs.multitask import ARCHITECTURES
from tf_mtml.configs.registry import get_experiment
from tf_mtml.train.negative_transfer import run_negative_transfer

EXPERIMENT = "mmoe_synthetic"
# The default is small enough for 5 minutes on 2 shared cores; any of ARCHITECTURES can run.
DEFAULT_ARCHITECTURES = ["mmoe", "shared_bottom", "ple", "single_task"]
QUICK = {"seeds": 1, "train_steps": 100, "architectures": ["mmoe", "ple"]}

FLAGS = flags.FLAGS


def run_seed(architectures: Sequence[str], seed: int, correlation: float, train_steps: int,
             work_dir: str) -> dict:
    """Every architecture's negative-transfer result on one problem, baselines shared."""
    results = {}
    for architecture in architectures:
        params = get_experiment(EXPERIMENT)
        params.override({"task": {"model": {"architecture": architecture},
                                  "data": {"correlation": correlation, "problem_seed": seed}},
                         "runtime": {"seed": seed}, "trainer": {"train_steps": train_steps}})
        keras.backend.clear_session()
        start = time.perf_counter()
        results[architecture] = run_negative_transfer(
            params, os.path.join(work_dir, f"seed{seed}", architecture),
            baseline_dir=os.path.join(work_dir, f"seed{seed}", "single_task"))
        results[architecture]["wall_s"] = time.perf_counter() - start
    return results


def summarize(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation (0 for one value) and the values."""
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()),
            "std": float(array.std(ddof=1)) if array.size > 1 else 0.0,
            "values": [float(v) for v in array]}


def run_benchmark(architectures: Sequence[str], seeds: Sequence[int], correlation: float,
                  train_steps: int) -> dict:
    """Runs every architecture at every seed; returns the report (JSON-ready)."""
    info = machine_info()
    start = time.perf_counter()
    # The trainer draws a progress bar on an interactive stdout, which must carry only JSON.
    with tempfile.TemporaryDirectory() as work_dir, contextlib.redirect_stdout(sys.stderr):
        runs = [run_seed(architectures, s, correlation, train_steps, work_dir) for s in seeds]
    first = runs[0][architectures[0]]
    metrics = list(first["report"]["tasks"])
    report = {}
    for architecture in architectures:
        reports = [run[architecture]["report"] for run in runs]
        report[architecture] = {
            "delta_m_pct": summarize([r["delta_m_pct"] for r in reports]),
            "relative_gain_pct": {m: summarize([r["tasks"][m]["relative_gain_pct"]
                                                for r in reports]) for m in metrics},
            "multi_task": {m: summarize([r["tasks"][m]["multi_task"] for r in reports])
                           for m in metrics},
            "negative_transfer_runs": {m: sum(m in r["negative_transfer"] for r in reports)
                                       for m in metrics},
            "wall_s": summarize([run[architecture]["wall_s"] for run in runs])}
    baselines = {m: summarize([run[architectures[0]]["report"]["tasks"][m]["single_task"]
                               for run in runs]) for m in metrics}
    return {"benchmark": "negative_transfer",
            "experiment": EXPERIMENT,
            "metric": "test MSE per task; delta_m_pct = mean relative MSE reduction over the "
                      "single-task baselines (> 0: multi-task helps)",
            "correlation": correlation, "seeds": list(seeds), "train_steps": train_steps,
            "architectures": report, "single_task_baselines": baselines,
            "total_wall_s": time.perf_counter() - start,
            "machine": {**info, "load_average_at_end": os.getloadavg()}}


def define_flags() -> None:
    flags.DEFINE_integer("seeds", 2, "Number of seeds 0..N-1.", lower_bound=1)
    flags.DEFINE_integer("train_steps", 1000, "Training steps of every run.", lower_bound=1)
    flags.DEFINE_float("correlation", 0.5, "Task correlation of the synthetic data, in [-1, 1].",
                       lower_bound=-1.0, upper_bound=1.0)
    flags.DEFINE_list("architectures", DEFAULT_ARCHITECTURES,
                      f"Multi-task architectures, from {list(ARCHITECTURES)}.")
    flags.DEFINE_bool("quick", False, f"A smoke run: {QUICK}, unless set explicitly.")


def main(argv) -> None:
    del argv
    values = {name: FLAGS[name].value for name in QUICK}
    if FLAGS.quick:
        values.update({k: v for k, v in QUICK.items() if not FLAGS[k].present})
    architectures = values["architectures"]
    unknown = sorted(set(architectures) - set(ARCHITECTURES))
    if not architectures or unknown or len(set(architectures)) != len(architectures):
        raise app.UsageError(
            f"--architectures must be distinct names from {list(ARCHITECTURES)}. "
            f"Received: --architectures={','.join(architectures)}")
    report = run_benchmark(architectures, range(values["seeds"]), FLAGS.correlation,
                           values["train_steps"])
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    define_flags()
    app.run(main)
