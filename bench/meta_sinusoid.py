"""MAML on sinusoid regression: meta-test MSE after 1, 5 and 10 inner steps on 5-shot tasks.

Finn et al. 2017, "Model-Agnostic Meta-Learning", https://arxiv.org/abs/1703.03400, sec. 5.1
and App. C (Table 2): MAML's 5-shot meta-test MSE is 0.67 / 0.38 / 0.35 after 1 / 5 / 10
gradient steps. The protocol behind those figures (sec. 5.1; meta-batch and step count from
the authors' code, github.com/cbfinn/maml): tasks `y = A sin(x - phase)`, `A ~ U[0.1, 5]`,
`phase ~ U[0, pi]`, `x ~ U[-5, 5]`; an MLP 1-40-40-1 (ReLU) meta-trained with K=10 support
points, one inner SGD step of lr 0.01 and Adam 1e-3 on 25 tasks per step for 70,000 steps;
at meta-test the one model is fine-tuned on K=5 points by SGD steps of lr 0.01 and the MSE is
measured on fresh points of each task. The paper's baseline "pretrained, step=0.01" trains the
same MLP to regress all tasks jointly, then fine-tunes it the same way.

This bench trains the registered `maml_sinusoid` experiment (that protocol) with the project's
`Trainer` for `--steps` steps, and the baseline (`task.model.inner_steps=0`: the outer loss is
the query MSE of the unadapted network) for as many steps. Both are evaluated on the same
`--eval_tasks` meta-test tasks (1000 by default; 600 in the paper) with `--eval_queries` query
points each, after each of `--eval_steps` inner steps; the MSE is the mean over tasks with its
95% confidence interval, the paired difference MAML - baseline likewise.

Command (from the repository root):
    .venv/bin/python -m bench.meta_sinusoid [--steps=40000] [--eval_tasks=1000] \\
        [--eval_steps=0,1,5,10] [--nopretrained]
    .venv/bin/python -m bench.meta_sinusoid --steps=70000   # the paper's training length

Output: one JSON object on stdout (logs go to stderr). Runtime on 2 shared CPU cores (load
average 5-9) with the defaults: 3.5 minutes; `--steps=70000` about 6.

Measured with the defaults (TF 2.21): MAML 0.60 +- 0.04 / 0.33 +- 0.03 / 0.30 +- 0.03 after
1 / 5 / 10 steps, at or below the published figures; the pretrained baseline 2.32 / 1.99 /
1.92, as in the paper's figure (about 2.3 after one step, 2.1 after ten).
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

from bench._common import machine_info
from tf_mtml.configs import experiments  # noqa: F401  (registers every experiment)
from tf_mtml.configs.experiment import ExperimentConfig
from tf_mtml.configs.registry import get_experiment
from tf_mtml.meta import MAML
from tf_mtml.meta.base import QUERY_X, QUERY_Y, SUPPORT_X, SUPPORT_Y, episode_scores
from tf_mtml.meta.metrics import MeanWithConfidence
from tf_mtml.train.run import build_trainer

EXPERIMENT = "maml_sinusoid"
PAPER = "Finn et al. 2017, https://arxiv.org/abs/1703.03400, sec. 5.1 and App. C (Table 2)"
# Published 5-shot meta-test MSE of MAML by number of inner steps.
PUBLISHED = {1: 0.67, 5: 0.38, 10: 0.35}
PAPER_PROTOCOL = {
    "train": "K=10 support points per task, 1 inner SGD step of lr 0.01, Adam 1e-3, 25 tasks "
             "per step, 70,000 steps (meta-batch and steps: the authors' code)",
    "meta_test": "K=5 support points, SGD steps of lr 0.01 on them, MSE on other points of the "
                 "task, 600 tasks",
    "pretrained_baseline": "the same MLP trained to regress all tasks jointly, fine-tuned with "
                           "step 0.01 (K=5)",
    "sources": "K, steps and training: sec. 5.1 (one model meta-trained with K=10, fine-tuned "
               "on K=5, 10 or 20 points) and its K=5 curve (Fig. 3, left), which the App. C "
               "figures match; meta-batch 25 and 70,000 steps: the authors' sinusoid command",
}

FLAGS = flags.FLAGS


def experiment_config(steps: int, eval_tasks: int, eval_shots: int, eval_queries: int,
                      pretrained: bool = False, step_size: float | None = None,
                      params_override: str = "") -> ExperimentConfig:
    """`maml_sinusoid` trained `steps` steps, evaluated on `eval_tasks` K-shot tasks.

    `pretrained=True` gives the baseline: no inner step in training (joint regression).
    """
    config = get_experiment(EXPERIMENT)
    config.override({
        "trainer": {"train_steps": steps},
        "task": {"data": {"eval_num_shots": eval_shots, "eval_num_queries": eval_queries,
                          "eval_episodes": eval_tasks,
                          "eval_meta_batch_size": min(eval_tasks, 100)}}})
    if pretrained:
        config.override({"task": {"model": {"inner_steps": 0}}})
    if step_size is not None:
        config.override({"task": {"model": {"inner_lr": step_size}}})
    config.override_from_string(params_override)
    config.validate()
    return config


def adapted_mse(model: MAML, dataset: tf.data.Dataset,
                eval_steps: Sequence[int]) -> dict[int, np.ndarray]:
    """Per-task query MSE `(tasks,)` after each of `eval_steps` inner SGD steps per task."""

    @tf.function
    def scores(episode):
        inputs = (episode[SUPPORT_X], episode[SUPPORT_Y], episode[QUERY_X])
        return [episode_scores(model.problem, episode[QUERY_Y], tf.map_fn(
            lambda e, steps=steps: model.adapt_and_predict(*e, steps=steps), inputs,
            fn_output_signature=tf.float32)) for steps in eval_steps]

    batches = [scores(episode) for episode in dataset]
    return {steps: np.concatenate([batch[i].numpy() for batch in batches])
            for i, steps in enumerate(eval_steps)}


def summarize(values: np.ndarray) -> dict:
    """Mean of per-task values with its 95% half-width (`MeanWithConfidence`) and count."""
    metric = MeanWithConfidence(name="mse")
    metric.update_state(values)
    result = metric.result()
    return {"mse": float(result["mse"]), "ci95": float(result["mse_ci95"]),
            "tasks": int(values.size)}


def train_and_evaluate(config: ExperimentConfig, eval_steps: Sequence[int]) -> dict:
    """Trains `config`; returns its run and per-task meta-test MSE after each of `eval_steps`."""
    keras.backend.clear_session()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as model_dir:
        trainer = build_trainer(config, model_dir)
        logs = trainer.train(config.trainer.train_steps)
    train_s = time.perf_counter() - start
    dataset = trainer.task.build_inputs(training=False)
    eval_start = time.perf_counter()
    mse = adapted_mse(trainer.model, dataset, eval_steps)
    return {"train_steps": trainer.step, "train_wall_s": train_s,
            "steps_per_s": trainer.step / train_s, "final_train_loss": logs["loss"],
            "inner_lr": trainer.model.inner_lr, "eval_wall_s": time.perf_counter() - eval_start,
            "per_task_mse": mse}


def _check_arguments(steps, eval_tasks, eval_steps, eval_shots, eval_queries,
                     pretrained_step_size) -> None:
    for name, value in (("steps", steps), ("eval_tasks", eval_tasks),
                        ("eval_shots", eval_shots), ("eval_queries", eval_queries)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"Received an invalid value for `{name}`, expected a positive "
                             f"integer. Received: {name}={value!r}")
    if (not eval_steps or len(set(eval_steps)) != len(eval_steps) or any(
            isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in eval_steps)):
        raise ValueError("Received an invalid value for `eval_steps`, expected distinct "
                         f"non-negative integers, e.g. [1, 5, 10]. Received: "
                         f"eval_steps={eval_steps!r}")
    if not (isinstance(pretrained_step_size, int | float) and pretrained_step_size > 0):
        raise ValueError("Received an invalid value for `pretrained_step_size`, expected a "
                         f"positive number. Received: pretrained_step_size="
                         f"{pretrained_step_size!r}")


def run_benchmark(steps: int = 40000, eval_tasks: int = 1000,
                  eval_steps: Sequence[int] = (0, 1, 5, 10), pretrained: bool = True,
                  eval_shots: int = 5, eval_queries: int = 100,
                  pretrained_step_size: float = 0.01, params_override: str = "") -> dict:
    """Trains MAML (and the pretrained baseline) and evaluates them; returns the report."""
    _check_arguments(steps, eval_tasks, eval_steps, eval_shots, eval_queries,
                     pretrained_step_size)
    eval_steps = sorted(eval_steps)
    info = machine_info()
    start = time.perf_counter()
    sizes = (steps, eval_tasks, eval_shots, eval_queries)
    configs = {"maml": experiment_config(*sizes, params_override=params_override)}
    if pretrained:
        configs["pretrained"] = experiment_config(*sizes, pretrained=True,
                                                  step_size=pretrained_step_size,
                                                  params_override=params_override)
    runs = {name: train_and_evaluate(config, eval_steps) for name, config in configs.items()}
    report = {}
    for name, run in runs.items():
        report[name] = {**{k: v for k, v in run.items() if k != "per_task_mse"},
                        "mse": {str(s): summarize(run["per_task_mse"][s]) for s in eval_steps}}
    for s in eval_steps:
        if s in PUBLISHED:
            figures = report["maml"]["mse"][str(s)]
            figures.update({"published": PUBLISHED[s],
                            # Positive: a higher error than published.
                            "gap": figures["mse"] - PUBLISHED[s],
                            "published_within_ci": abs(figures["mse"] - PUBLISHED[s])
                            <= figures["ci95"]})
    if pretrained:
        report["maml_minus_pretrained"] = {
            str(s): summarize(runs["maml"]["per_task_mse"][s]
                              - runs["pretrained"]["per_task_mse"][s]) for s in eval_steps}
    data = configs["maml"].task.data
    return {
        "benchmark": "meta_sinusoid", "experiment": EXPERIMENT, "paper": PAPER,
        "paper_protocol": PAPER_PROTOCOL,
        "protocol": {
            "train": f"K={data.num_shots} support and {data.num_queries} query points per task, "
                     f"{data.meta_batch_size} tasks per step, {steps} steps",
            "meta_test": f"K={eval_shots} support and {eval_queries} query points per task, "
                         f"{report['maml']['mse'][str(eval_steps[0])]['tasks']} tasks (the "
                         "same for every model and step count), SGD steps of the model's "
                         "inner_lr",
            "ci": "95% normal interval of the mean over tasks (1.96 std / sqrt(n))"},
        "config": {"steps": steps, "eval_tasks": eval_tasks, "eval_steps": eval_steps,
                   "eval_shots": eval_shots, "eval_queries": eval_queries,
                   "pretrained_step_size": pretrained_step_size if pretrained else None,
                   "params_override": params_override,
                   "experiment": configs["maml"].as_dict()},
        **report,
        "total_wall_s": time.perf_counter() - start,
        "machine": {**info, "load_average_at_end": os.getloadavg()},
    }


def define_flags() -> None:
    flags.DEFINE_integer("steps", 40000, "Meta-training steps of each model (70,000 in the "
                         "paper).", lower_bound=1)
    flags.DEFINE_integer("eval_tasks", 1000, "Meta-test tasks (600 in the paper).",
                         lower_bound=1)
    flags.DEFINE_list("eval_steps", ["0", "1", "5", "10"], "Inner steps at meta-test.")
    flags.DEFINE_bool("pretrained", True, "Also train and evaluate the pretrained baseline.")
    flags.DEFINE_float("pretrained_step_size", 0.01, "Fine-tuning step of the baseline (the "
                       "paper's 0.01 for K=5).")
    flags.DEFINE_integer("eval_shots", 5, "K support points per meta-test task.", lower_bound=1)
    flags.DEFINE_integer("eval_queries", 100, "Query points per meta-test task.", lower_bound=1)
    flags.DEFINE_string("params_override", "", "Dotted config overrides of both models, e.g. "
                        "'runtime.seed=1'.")


def main(argv) -> None:
    del argv
    try:
        eval_steps = [int(s) for s in FLAGS.eval_steps]
    except ValueError as error:
        raise app.UsageError("--eval_steps must be comma-separated integers, e.g. 1,5,10. "
                             f"Received: --eval_steps={','.join(FLAGS.eval_steps)}") from error
    # The trainer draws a progress bar on an interactive stdout, which must carry only JSON.
    with contextlib.redirect_stdout(sys.stderr):
        report = run_benchmark(FLAGS.steps, FLAGS.eval_tasks, eval_steps, FLAGS.pretrained,
                               FLAGS.eval_shots, FLAGS.eval_queries, FLAGS.pretrained_step_size,
                               FLAGS.params_override)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    define_flags()
    app.run(main)
