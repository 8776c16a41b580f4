"""Runs an experiment config in a mode: train, eval, train_and_eval or export."""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf
from absl import logging

from tf_mtml._files import atomic_write_text
from tf_mtml.configs.base import ConfigError
from tf_mtml.configs.experiment import ExperimentConfig
from tf_mtml.models.keras_file import save_keras_model
from tf_mtml.serving.export import export_saved_model
from tf_mtml.serving.models_config import check_model_name, write_models_config
from tf_mtml.tasks.factory import build_task
from tf_mtml.train.distribute import get_strategy
from tf_mtml.train.loop import Trainer

MODES = ("train", "eval", "train_and_eval", "export")
PARAMS_FILE = "params.yaml"
EVAL_RESULTS_FILE = "eval_results.json"
KERAS_FILE = "model.keras"


def write_params(params: ExperimentConfig, model_dir: str) -> str:
    """Writes the frozen config to `model_dir/params.yaml`."""
    tf.io.gfile.makedirs(model_dir)
    path = os.path.join(model_dir, PARAMS_FILE)
    atomic_write_text(path, params.to_yaml())
    return path


def write_eval_results(results: dict[str, float], step: int, model_dir: str) -> str:
    """Writes `{"step": N, "<task>/<metric>": value, ...}` to `model_dir/eval_results.json`."""
    path = os.path.join(model_dir, EVAL_RESULTS_FILE)
    atomic_write_text(path, json.dumps({"step": step, **results}, indent=2, sort_keys=True))
    return path


def build_trainer(params: ExperimentConfig, model_dir: str) -> Trainer:
    """Sets precision (and determinism), builds the strategy, then the task, model and
    optimizer in its scope."""
    keras.mixed_precision.set_global_policy(params.runtime.mixed_precision_dtype)
    if params.runtime.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = get_strategy(params.runtime.strategy, params.runtime.tpu,
                            params.runtime.num_cpu_devices)
    return Trainer(build_task(params), strategy, params.trainer, model_dir,
                   mixed_float16=params.runtime.mixed_precision_dtype == "mixed_float16")


def export_model(trainer: Trainer, model_dir: str, model_name: str | None = None,
                 num_warmup_examples: int = 4) -> str:
    """Exports the trainer's model to `model_dir/export/<version>/` for TF Serving.

    The version holds `serving_default`, the task's extra signatures and a warmup file of
    `num_warmup_examples` real examples per signature (`task.serving_examples`);
    `model_dir/export/models.config` then serves the export base as `model_name`.

    Args:
        trainer: The trainer holding the task and the (restored) model.
        model_dir: The run's directory.
        model_name: The served model name, normally the experiment name; defaults to the
            base name of `model_dir`.
        num_warmup_examples: Rows per warmup request (a few real rows: cheap to replay).

    Returns:
        The path of the written version directory.
    """
    task, model = trainer.task, trainer.model
    export_base = os.path.join(model_dir, "export")
    model_name = check_model_name(model_name or os.path.basename(os.path.abspath(model_dir)))
    extra = task.extra_endpoints(model) if hasattr(task, "extra_endpoints") else None
    path = export_saved_model(model, export_base, input_signature=task.input_signature(),
                              serve_fn=task.serve_fn(model), extra_endpoints=extra,
                              warmup_examples=task.serving_examples(num_warmup_examples),
                              model_name=model_name)
    write_models_config(export_base, model_name)
    return path


def _check_export_args(model_dir: str, experiment: str | None) -> None:
    """Fails before any model is built when `--mode=export` cannot succeed."""
    if "://" in model_dir:
        raise ValueError(
            f"--mode=export needs a local --model_dir (received {model_dir!r}): a version "
            "appears atomically only through a POSIX rename, so a polling TF Serving never "
            "loads half a version. Copy the run first (e.g. `gcloud storage cp -r "
            f"{model_dir} /tmp/run`), export there, then copy `export/` to the serving "
            "bucket with a version number TF Serving does not yet watch.")
    if experiment is not None:
        check_model_name(experiment)


def run_experiment(params: ExperimentConfig, mode: str, model_dir: str,
                   experiment: str | None = None) -> dict:
    """Runs `mode`; returns `{"train": logs, "eval": results, "export_dir": path,
    "keras_file": path}` (as run).

    `experiment` names the served model in `export/models.config` (default: the base name of
    `model_dir`). Export also writes `model_dir/model.keras`, which loads with
    `safe_mode=True` (`tf_mtml.models.keras_file.load_keras_model`).
    """
    if mode not in MODES:
        raise ConfigError(f"Unknown --mode={mode!r}; expected one of {MODES}.")
    params.validate()
    if mode == "export":
        _check_export_args(model_dir, experiment)
    trainer = build_trainer(params, model_dir)
    if mode in ("train", "train_and_eval") and trainer.is_chief:
        write_params(params, model_dir)
    outputs: dict = {}

    def evaluate():
        outputs["eval"] = trainer.evaluate(params.trainer.validation_steps)
        if trainer.is_chief:
            write_eval_results(outputs["eval"], trainer.step, model_dir)

    if mode in ("train", "train_and_eval") and hasattr(trainer.task, "run_schedule"):
        # A task trained on a schedule (day by day, in temporal order) drives the trainer and
        # writes its own per-phase eval_results.json. A termination signal during an
        # evaluation between phases is answered at the end of the next training loop.
        with trainer.preemption:
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
        outputs["export_dir"] = export_model(trainer, model_dir, model_name=experiment)
        outputs["keras_file"] = save_keras_model(trainer.model,
                                                 os.path.join(model_dir, KERAS_FILE))
        logging.info("Exported SavedModel to %s and %s", outputs["export_dir"],
                     outputs["keras_file"])
    return outputs
