"""Single-task, Shared-Bottom, OMoE, MMoE and PLE on census-income: test AUC over seeds.

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
Mixture-of-Experts", KDD 2018, sec. 6.2, https://doi.org/10.1145/3219819.3220007.
Each run trains a registered experiment (`<model>_census`, see
`tf_mtml/configs/census_experiments.py`) in-process with the project's `Trainer` for the same
number of steps, then scores the TEST split (20% of the re-split UCI test file, 19,953 rows)
with the exact ROC AUC (`sklearn.metrics.roc_auc_score`) of every task. The single-task
baseline trains one model per task. Seed `s` sets the initialisation and shuffling
(`runtime.seed`); the 60/20/20 split stays fixed (`task.data.problem_seed=0`), as in the paper,
which reports the mean and the best AUC over its runs.

The published figures come from another protocol (trained on the full UCI training split of
199,523 rows with tuned hyperparameters, tested on half of the UCI test file), so they are a
reference, not a target: our models see 59,857 training rows.

Command (from the repository root):
    .venv/bin/python bench/census_income.py [--seeds=5] \\
        [--models=single_task,shared_bottom,omoe,mmoe,ple] [--group=1] [--train_steps=1000] \\
        [--data_dir=...] [--quick]

Output: one JSON object on stdout (logs go to stderr). Runtime on 2 CPU cores shared with other
jobs (load average 8-10), 1,000 steps at batch 1024: 6.3 minutes measured for `--seeds=2`
(12 runs, 30-45 s each), so about 16 minutes for the defaults (30 runs); `--quick` (1 seed,
shared_bottom and mmoe, 100 steps): about 1.5 minutes.

Measured with `--seeds=2` (TF 2.21, Keras 3.15), test AUC mean (income / never married):
single-task 0.9458 / 0.9941, Shared-Bottom 0.9454 / 0.9941, OMoE 0.9446 / 0.9941, MMoE
0.9458 / 0.9942, PLE 0.9461 / 0.9941 (seed-to-seed std <= 0.0008). The models lie within
0.0015 of each other on income (OMoE lowest) and 0.0001 on marital status; the paper's MMoE
margin over Shared-Bottom (+0.0064 / +0.0011) does not appear at this budget and data size.
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
import tensorflow as tf
from absl import app, flags
from sklearn.metrics import roc_auc_score

from bench._common import machine_info
from tf_mtml.configs import census_experiments
from tf_mtml.configs.base import ConfigError
from tf_mtml.configs.registry import get_experiment
from tf_mtml.data.census import GROUPS
from tf_mtml.tasks.factory import build_task
from tf_mtml.train.loop import Trainer

MODELS = ("single_task", "shared_bottom", "omoe", "mmoe", "ple")
QUICK = {"seeds": 1, "models": ["shared_bottom", "mmoe"], "train_steps": 100}
# Ma et al. 2018, census-income group 1 (README of ../shared/data): AUC on the UCI test data.
PUBLISHED = {
    "source": "Ma et al. 2018, group 1, trained on the full UCI training split",
    "mmoe": {"income": {"mean": 0.9359, "best": 0.9410}, "marital": {"mean": 0.9926}},
    "shared_bottom": {"income": {"mean": 0.9295, "best": 0.9361}, "marital": {"mean": 0.9915}},
}

FLAGS = flags.FLAGS


def experiment_config(model: str, group: int, seed: int, task_names: Sequence[str],
                      train_steps: int | None, data_dir: str = ""):
    """The validated config of one run: `<model>_census` on `task_names` of `group`."""
    config = get_experiment(f"{model}_census")
    overrides = {"task": {"data": {"census_group": group, "data_dir": data_dir},
                          "tasks": census_experiments.census_tasks(group, tuple(task_names))},
                 "runtime": {"seed": seed}}
    if train_steps is not None:
        overrides["trainer"] = {"train_steps": train_steps}
    config.override(overrides)
    config.validate()
    return config


def run_once(model: str, group: int, seed: int, task_names: Sequence[str],
             train_steps: int | None, data_dir: str = "") -> dict:
    """Trains one model; returns the exact test AUC of each of its tasks, size and time."""
    config = experiment_config(model, group, seed, task_names, train_steps, data_dir)
    keras.backend.clear_session()
    start = time.perf_counter()
    task = build_task(config)
    # The trainer draws a progress bar on an interactive stdout, which must carry only JSON.
    with tempfile.TemporaryDirectory() as model_dir, contextlib.redirect_stdout(sys.stderr):
        trainer = Trainer(task, tf.distribute.get_strategy(), config.trainer, model_dir=model_dir)
        trainer.train(config.trainer.train_steps)
        features, labels = task.arrays["test"]
        predictions = trainer.model.predict(features, batch_size=4096, verbose=0)
    return {"auc": {name: float(roc_auc_score(labels[name], np.asarray(predictions[name])))
                    for name in task_names},
            "params": trainer.model.count_params(), "train_steps": trainer.step,
            "wall_s": time.perf_counter() - start}


def task_sets(model: str, group: int) -> list[tuple[str, ...]]:
    """The tasks of each network a model trains: one per task for the single-task baseline."""
    names = GROUPS[group]
    return [(name,) for name in names] if model == "single_task" else [names]


def run_model(model: str, group: int, seed: int, train_steps: int | None,
              data_dir: str = "") -> dict:
    """One seed of a model; `params` adds up the single-task baseline's networks."""
    runs = [run_once(model, group, seed, names, train_steps, data_dir)
            for names in task_sets(model, group)]
    return {"auc": {k: v for run in runs for k, v in run["auc"].items()},
            "params": sum(run["params"] for run in runs),
            "train_steps": runs[0]["train_steps"],
            "wall_s": sum(run["wall_s"] for run in runs)}


def summarize(values: Sequence[float]) -> dict:
    """Mean, best (max), sample standard deviation (0 for one value) and the values."""
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "best": float(array.max()),
            "std": float(array.std(ddof=1)) if array.size > 1 else 0.0,
            "values": [float(v) for v in array]}


def check_models(models: Sequence[str], group: int, data_dir: str = "") -> None:
    """Fails before any training when a model's config does not validate (e.g. unknown)."""
    problems = {}
    for model in models:
        try:
            experiment_config(model, group, 0, task_sets(model, group)[0], None, data_dir)
        except ConfigError as error:
            problems[model] = str(error)
    if problems:
        raise ConfigError(
            f"These models cannot run: {problems}. Leave them out of --models.")


def run_benchmark(seeds: Sequence[int], models: Sequence[str] = MODELS, group: int = 1,
                  train_steps: int | None = None, data_dir: str = "") -> dict:
    """Runs every model for every seed; returns the report (JSON-ready)."""
    check_models(models, group, data_dir)
    info = machine_info()
    start = time.perf_counter()
    report = {}
    for model in models:
        runs = [run_model(model, group, seed, train_steps, data_dir) for seed in seeds]
        report[model] = {
            "experiment": f"{model}_census",
            "params": runs[0]["params"],
            "train_steps": runs[0]["train_steps"],
            "test_auc": {name: summarize([run["auc"][name] for run in runs])
                         for name in GROUPS[group]},
            "wall_s_per_seed": summarize([run["wall_s"] for run in runs])["mean"]}
    return {"benchmark": "census_income",
            "paper": "Ma et al. 2018, https://doi.org/10.1145/3219819.3220007 (sec. 6.2)",
            "metric": "exact ROC AUC on the test split (19,953 rows), mean and best over seeds",
            "group": group, "tasks": list(GROUPS[group]), "seeds": list(seeds),
            "batch_size": census_experiments.BATCH_SIZE,
            "models": report,
            "published": PUBLISHED if group == 1 else None,
            "total_wall_s": time.perf_counter() - start,
            "machine": {**info, "load_average_at_end": os.getloadavg()}}


def define_flags() -> None:
    flags.DEFINE_integer("seeds", 5, "Number of seeds 0..N-1 per model.", lower_bound=1)
    flags.DEFINE_list("models", list(MODELS), f"Models, from {MODELS}.")
    flags.DEFINE_enum("group", "1", ["1", "2"], "Census task group.")
    flags.DEFINE_integer("train_steps", None, "Training steps per run; default: the "
                         f"experiments' ({census_experiments.TRAIN_STEPS}).", lower_bound=1)
    flags.DEFINE_string("data_dir", "", "Data root holding census-income/; default: "
                        "$TF_MTML_DATA_DIR, else ../shared/data.")
    flags.DEFINE_bool("quick", False, f"A smoke run: {QUICK}, unless set explicitly.")


def main(argv) -> None:
    del argv
    values = {name: FLAGS[name].value for name in QUICK}
    if FLAGS.quick:
        values.update({k: v for k, v in QUICK.items() if not FLAGS[k].present})
    unknown = sorted(set(values["models"]) - set(MODELS))
    if unknown or not values["models"] or len(set(values["models"])) != len(values["models"]):
        raise app.UsageError(
            f"--models must be distinct names from {MODELS}, comma-separated. Received: "
            f"--models={','.join(values['models'])}")
    report = run_benchmark(range(values["seeds"]), values["models"], int(FLAGS.group),
                           values["train_steps"], FLAGS.data_dir)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    define_flags()
    app.run(main)
