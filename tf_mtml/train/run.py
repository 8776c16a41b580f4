"""Runs an experiment config in a mode: train, eval, train_and_eval or export."""

from __future__ import annotations

import json
import os

import keras
from absl import logging

from tf_mtml.configs.base import ConfigError
from tf_mtml.configs.experiment import ExperimentConfig
from tf_mtml.serving.export import export_saved_model
from tf_mtml.tasks.factory import build_task
from tf_mtml.train.distribute import get_strategy
from tf_mtml.train.loop import Trainer

MODES = ("train", "eval", "train_and_eval", "export")
PARAMS_FILE = "params.yaml"
EVAL_RESULTS_FILE = "eval_results.json"


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_params(params: ExperimentConfig, model_dir: str) -> str:
    """Writes the frozen config to `model_dir/params.yaml`."""
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, PARAMS_FILE)
    _atomic_write(path, params.to_yaml())
    return path


def write_eval_results(results: dict[str, float], step: int, model_dir: str) -> str:
    """Writes `{"step": N, "<task>/<metric>": value, ...}` to `model_dir/eval_results.json`."""
    path = os.path.join(model_dir, EVAL_RESULTS_FILE)
    _atomic_write(path, json.dumps({"step": step, **results}, indent=2, sort_keys=True))
    return path


def build_trainer(params: ExperimentConfig, model_dir: str) -> Trainer:
    """Sets precision, builds the strategy, then the task, model and optimizer in its scope."""
    keras.mixed_precision.set_global_policy(params.runtime.mixed_precision_dtype)
    strategy = get_strategy(params.runtime.strategy, params.runtime.tpu,
                            params.runtime.num_cpu_devices)
    return Trainer(build_task(params), strategy, params.trainer, model_dir,
                   mixed_float16=params.runtime.mixed_precision_dtype == "mixed_float16")


def export_model(trainer: Trainer, model_dir: str) -> str:
    """Exports the trainer's model to `model_dir/export/<version>/` for TF Serving."""
    task = trainer.task
    extra = task.extra_endpoints(trainer.model) if hasattr(task, "extra_endpoints") else None
    return export_saved_model(trainer.model, os.path.join(model_dir, "export"),
                              input_signature=task.input_signature(),
                              serve_fn=task.serve_fn(trainer.model), extra_endpoints=extra)


def run_experiment(params: ExperimentConfig, mode: str, model_dir: str) -> dict:
    """Runs `mode`; returns `{"train": logs, "eval": results, "export_dir": path}` (as run)."""
    if mode not in MODES:
        raise ConfigError(f"Unknown --mode={mode!r}; expected one of {MODES}.")
    params.validate()
    if mode in ("train", "train_and_eval"):
        write_params(params, model_dir)
    trainer = build_trainer(params, model_dir)
    outputs: dict = {}

    def evaluate():
        outputs["eval"] = trainer.evaluate(params.trainer.validation_steps)
        write_eval_results(outputs["eval"], trainer.step, model_dir)

    if mode in ("train", "train_and_eval") and hasattr(trainer.task, "run_schedule"):
        # A task trained on a schedule (day by day, in temporal order) drives the trainer and
        # writes its own per-phase eval_results.json.
        outputs.update(trainer.task.run_schedule(trainer, evaluate=mode == "train_and_eval"))
        return outputs
    if mode in ("train", "train_and_eval"):
        outputs["train"] = trainer.train(params.trainer.train_steps,
                                         eval_fn=evaluate if mode == "train_and_eval" else None)
        return outputs
    if not trainer.restore():
        raise FileNotFoundError(
            f"--mode={mode} needs a trained checkpoint, but {model_dir!r} has none. Train first "
            "(--mode=train or train_and_eval) or pass the --model_dir of a trained run."
        )
    if mode == "eval":
        evaluate()
    else:
        outputs["export_dir"] = export_model(trainer, model_dir)
        logging.info("Exported SavedModel to %s", outputs["export_dir"])
    return outputs
