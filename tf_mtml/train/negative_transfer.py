"""Negative transfer: a multi-task model against single-task baselines with the same budget.

Multi-task learning helps a task when its multi-task metric beats the same task trained
alone, and hurts it (negative transfer) otherwise. The summary figure is the average relative
change over tasks (Maninis et al., "Attentive Single-Tasking of Multiple Tasks", CVPR 2019,
https://arxiv.org/abs/1904.08918; Vandenhende et al., "Multi-Task Learning for Dense
Prediction Tasks: A Survey", TPAMI 2021, https://arxiv.org/abs/2004.13379):

    Δm% = (1/T) Σ_k (-1)^{l_k} (M_mt,k - M_st,k) / M_st,k × 100,

with `l_k = 1` when lower is better for task `k`'s metric, so Δm% > 0 means multi-task
learning helps on average. The division is by `|M_st,k|`, the same for the usual positive
metrics, so that the sign says better or worse for any value.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from tf_mtml.configs.experiment import ExperimentConfig
from tf_mtml.configs.multitask import MultiTaskModelConfig
from tf_mtml.models.task_spec import TaskSpec, as_task_specs
from tf_mtml.tasks.factory import build_task
from tf_mtml.train.loop import Trainer
from tf_mtml.train.run import PARAMS_FILE, build_trainer, write_params

# Direction of every metric name that `MultiTaskModel` logs per task.
HIGHER_IS_BETTER = {"auc": True, "accuracy": True, "mse": False, "mae": False, "loss": False}


def _value(metrics: Mapping[str, Any], key: str, which: str) -> float:
    if key not in metrics:
        raise ValueError(
            f"Metric '{key}' is missing from `{which}`, which has {sorted(metrics)}. Evaluate "
            "both models on the same metrics, or leave the metric out of `higher_is_better`."
        )
    value = float(metrics[key])
    if not math.isfinite(value):
        raise ValueError(f"Metric '{key}' of `{which}` is not finite. Received: {value}")
    return value


def negative_transfer_report(
    multi_task_metrics: Mapping[str, float],
    single_task_metrics: Mapping[str, float],
    higher_is_better: Mapping[str, bool],
) -> dict:
    """Per-task changes of a multi-task model over its single-task baselines, and Δm%.

    Args:
        multi_task_metrics: `{metric key: value}` of the multi-task model, e.g.
            `{"income/auc": 0.93, "marital/auc": 0.99}`.
        single_task_metrics: The same keys for the single-task baselines.
        higher_is_better: `{metric key: bool}`, one metric per task: the metrics compared
            (`T = len(higher_is_better)`) and their direction.

    Returns:
        `{"delta_m_pct": Δm%, "num_tasks": T, "negative_transfer": [keys whose relative
        gain is < 0], "tasks": {key: {"multi_task", "single_task", "delta" (M_mt - M_st),
        "relative_gain_pct" ((-1)^l (M_mt - M_st) / M_st × 100), "higher_is_better"}}}`.

    Example:
        ```python
        report = negative_transfer_report({"a/auc": 0.9, "b/mse": 0.5},
                                          {"a/auc": 0.8, "b/mse": 0.4},
                                          {"a/auc": True, "b/mse": False})
        report["delta_m_pct"]  # (12.5 - 25.0) / 2 = -6.25
        ```
    """
    if not isinstance(higher_is_better, Mapping) or not higher_is_better or not all(
        isinstance(k, str) and isinstance(v, bool) for k, v in higher_is_better.items()
    ):
        raise ValueError(
            "Received an invalid value for `higher_is_better`, expected a non-empty mapping of "
            "metric keys to booleans, e.g. {'income/auc': True, 'watch/mse': False}. "
            f"Received: higher_is_better={higher_is_better!r}"
        )
    tasks = {}
    for key, higher in higher_is_better.items():
        multi = _value(multi_task_metrics, key, "multi_task_metrics")
        single = _value(single_task_metrics, key, "single_task_metrics")
        if single == 0.0:
            raise ValueError(
                f"The single-task value of '{key}' is 0, and Δm% divides by it. Compare on a "
                "metric that is nonzero for the baseline (e.g. the loss instead of an error "
                "that reached 0)."
            )
        gain = (multi - single) / abs(single) * 100.0 * (1.0 if higher else -1.0)
        tasks[key] = {"multi_task": multi, "single_task": single, "delta": multi - single,
                      "relative_gain_pct": gain, "higher_is_better": higher}
    gains = [t["relative_gain_pct"] for t in tasks.values()]
    return {"delta_m_pct": sum(gains) / len(gains), "num_tasks": len(gains),
            "negative_transfer": [k for k, t in tasks.items() if t["relative_gain_pct"] < 0],
            "tasks": tasks}


def default_higher_is_better(tasks: Sequence[TaskSpec | Mapping[str, Any]]) -> dict[str, bool]:
    """The first metric of every task and its direction, e.g. `{"y1/mse": False}`."""
    return {f"{t.name}/{t.metric_names[0]}": HIGHER_IS_BETTER[t.metric_names[0]]
            for t in as_task_specs(tasks)}


def single_task_config(params: ExperimentConfig, task_name: str) -> ExperimentConfig:
    """A copy of `params` that trains the task `task_name` alone (`single_task` network).

    Data, seeds, batch size, optimizer and steps are kept. `task.model` keeps only what the
    single-task network reads, its widths (`expert_units`) and towers; every other field
    takes its default, so every architecture of an experiment has the same baselines, and
    the weighting is static (loss weighting and gradient methods balance tasks, and one task
    has nothing to balance).
    """
    specs = as_task_specs(params.task.tasks)
    names = [t.name for t in specs]
    if task_name not in names:
        raise ValueError(f"Unknown task '{task_name}'; the experiment's tasks are {names}.")
    single = copy.deepcopy(params)
    single.task.tasks = (params.task.tasks[names.index(task_name)],)
    single.task.model = MultiTaskModelConfig(architecture="single_task",
                                             expert_units=params.task.model.expert_units,
                                             tower_units=params.task.model.tower_units)
    single.validate()
    return single


def _claim_run_dir(params: ExperimentConfig, directory: str) -> None:
    """Writes `params.yaml` into `directory`, or checks that the run there used `params`."""
    path = os.path.join(directory, PARAMS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            if f.read() != params.to_yaml():
                raise ValueError(
                    f"{directory!r} holds a run of another config (its {PARAMS_FILE} differs), "
                    "which would be restored instead of trained. Pass a new directory or "
                    "delete that run."
                )
    write_params(params, directory)


def _restrict_labels(arrays: Mapping[str, tuple], task_name: str) -> dict[str, tuple]:
    return {split: (features, {task_name: labels[task_name]})
            for split, (features, labels) in arrays.items()}


def run_negative_transfer(
    params: ExperimentConfig,
    model_dir: str,
    higher_is_better: Mapping[str, bool] | None = None,
    baseline_dir: str | None = None,
) -> dict:
    """Trains the multi-task experiment and one single-task baseline per task; reports.

    Every model trains `params.trainer.train_steps` steps on the same examples, in the same
    order, with the same optimizer and seed, and is evaluated on the same evaluation split.
    A baseline reads the multi-task task's examples (its `arrays`) restricted to its own
    labels, so data sources whose examples carry several tasks' labels work unchanged. Each
    run checkpoints under its own directory with its `params.yaml` and resumes from it when
    run again (a directory holding another config's run raises), so the architectures of
    one experiment can share their baselines through `baseline_dir`.

    Args:
        params: A multi-task experiment (`MultiTaskConfig` task); its strategy and precision
            are used for every run.
        model_dir: The multi-task run goes to `model_dir/multi_task`.
        higher_is_better: The compared metrics (one per task); default: every task's first
            metric (`default_higher_is_better`).
        baseline_dir: Task `t`'s baseline goes to `baseline_dir/t` (default
            `model_dir/single_task`).

    Returns:
        `{"report": negative_transfer_report(...), "multi_task": eval results,
        "single_task": {task: eval results}, "train_steps": steps of every run}`.
    """
    params.validate()
    _claim_run_dir(params, os.path.join(model_dir, "multi_task"))
    trainer = build_trainer(params, os.path.join(model_dir, "multi_task"))
    trainer.train(params.trainer.train_steps)
    multi_task = trainer.evaluate(params.trainer.validation_steps)
    single_task, single_task_metrics = {}, {}
    mixed_float16 = params.runtime.mixed_precision_dtype == "mixed_float16"
    baseline_dir = baseline_dir or os.path.join(model_dir, "single_task")
    for spec in as_task_specs(params.task.tasks):
        single = single_task_config(params, spec.name)
        task = build_task(single)
        task.arrays = _restrict_labels(trainer.task.arrays, spec.name)
        _claim_run_dir(single, os.path.join(baseline_dir, spec.name))
        baseline = Trainer(task, trainer.strategy, single.trainer,
                           os.path.join(baseline_dir, spec.name),
                           mixed_float16=mixed_float16)
        baseline.train(single.trainer.train_steps)
        single_task[spec.name] = baseline.evaluate(single.trainer.validation_steps)
        single_task_metrics.update({k: v for k, v in single_task[spec.name].items()
                                    if k.startswith(f"{spec.name}/")})
    if higher_is_better is None:
        higher_is_better = default_higher_is_better(params.task.tasks)
    return {"report": negative_transfer_report(multi_task, single_task_metrics, higher_is_better),
            "multi_task": multi_task, "single_task": single_task,
            "train_steps": params.trainer.train_steps}
