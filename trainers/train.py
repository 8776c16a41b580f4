"""Trains, evaluates and exports a registered experiment.

    python -m trainers.train --experiment=mmoe_synthetic --model_dir=/tmp/mmoe \
        --mode=train_and_eval [--config_file=a.yaml ...] [--params_override=a.b=c,...]
        [--train_steps=N] [--strategy=mirrored] [--tpu=ADDRESS]
    python -m trainers.train --experiment=mmoe_synthetic --model_dir=/tmp/mmoe --mode=export

Config flow (as in TF Model Garden): the registered experiment's config, then each
--config_file (YAML) in order, then --params_override, then --train_steps / --strategy /
--tpu; validated; written to MODEL_DIR/params.yaml. In eval and export modes an existing
MODEL_DIR/params.yaml is applied first, so the model matches the one that was trained.
"""

from __future__ import annotations

import os
import sys

import tensorflow as tf
from absl import app, flags, logging

from tf_mtml.configs import experiments  # noqa: F401  (registers every experiment)
from tf_mtml.configs.base import ConfigError
from tf_mtml.configs.experiment import ExperimentConfig
from tf_mtml.configs.registry import get_experiment, list_experiments
from tf_mtml.train.distribute import TPUUnreachableError
from tf_mtml.train.preemption import TrainingPreempted
from tf_mtml.train.run import MODES, PARAMS_FILE, run_experiment

FLAGS = flags.FLAGS


def define_flags() -> None:
    names = ", ".join(list_experiments())
    flags.DEFINE_string("experiment", None,
                        f"Name of a registered experiment. Registered experiments: {names}.")
    flags.DEFINE_string("model_dir", None, "Directory for checkpoints, summaries, params.yaml, "
                        "eval_results.json and export/<version>/.")
    flags.DEFINE_enum("mode", "train_and_eval", list(MODES), "What to run.")
    flags.DEFINE_multi_string("config_file", [], "YAML config overrides, applied in order.")
    flags.DEFINE_string("params_override", "",
                        "Dotted overrides applied after --config_file, e.g. "
                        "'trainer.train_steps=100,task.model.num_experts=4'.")
    flags.DEFINE_integer("train_steps", None, "Overrides trainer.train_steps.")
    flags.DEFINE_string("strategy", None, "Overrides runtime.strategy: default, one_device, "
                        "mirrored, multi_worker_mirrored or tpu.")
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address (runtime.tpu); 'local' on a "
                        "Cloud TPU VM.")
    flags.DEFINE_string("data_dir", None, "Data root holding omniglot/, census-income/ "
                        "(task.data.data_dir); default: $TF_MTML_DATA_DIR, else ../shared/data.")
    flags.mark_flags_as_required(["experiment", "model_dir"])


def build_params(experiment: str, model_dir: str, mode: str, config_files, params_override: str,
                 train_steps: int | None, strategy: str | None, tpu: str | None,
                 data_dir: str | None = None) -> ExperimentConfig:
    """The validated experiment config for these flag values."""
    params = get_experiment(experiment)
    saved = os.path.join(model_dir, PARAMS_FILE)
    if mode in ("eval", "export") and tf.io.gfile.exists(saved):
        params.override_from_yaml(saved)
    for path in config_files:
        params.override_from_yaml(path)
    params.override_from_string(params_override)
    flag_overrides = {"trainer": {"train_steps": train_steps},
                      "runtime": {"strategy": strategy, "tpu": tpu}}
    params.override({section: {k: v for k, v in values.items() if v is not None}
                     for section, values in flag_overrides.items()})
    if data_dir is not None:
        if not hasattr(getattr(params.task, "data", None), "data_dir"):
            raise ConfigError(
                f"--data_dir={data_dir!r} was given, but experiment {experiment!r} reads no data "
                "from disk (its data is generated). Drop --data_dir.")
        params.override({"task": {"data": {"data_dir": data_dir}}})
    params.validate()
    return params


def main(argv) -> int:
    del argv
    try:
        params = build_params(FLAGS.experiment, FLAGS.model_dir, FLAGS.mode, FLAGS.config_file,
                              FLAGS.params_override, FLAGS.train_steps, FLAGS.strategy, FLAGS.tpu,
                              FLAGS.data_dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        outputs = run_experiment(params, FLAGS.mode, FLAGS.model_dir, FLAGS.experiment)
    except TrainingPreempted as e:
        # Exit 0: the job stopped cleanly and a restart with the same command resumes.
        print(str(e), file=sys.stderr)
        return 0
    except (FileNotFoundError, ValueError, TPUUnreachableError) as e:
        # Bad data or inputs (a damaged zip, N-way larger than the classes, no TPU at the
        # address, ...): the message names the value and the fix; the traceback is logged at
        # --verbosity=1.
        logging.debug("Traceback of the error below:", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    model_dir = os.path.abspath(FLAGS.model_dir)
    lines = [f"model_dir (checkpoints, params.yaml): {model_dir}",
             f"TensorBoard logs: tensorboard --logdir {model_dir}"]
    if "eval" in outputs:
        lines.append(f"eval results: {os.path.join(model_dir, 'eval_results.json')}")
    if "export_dir" in outputs:
        lines.append(f"SavedModel (TF Serving layout): {os.path.abspath(outputs['export_dir'])}")
        lines.append(f"TF Serving config: {os.path.join(model_dir, 'export', 'models.config')}")
        lines.append(f"Keras model (loads with safe_mode=True): {outputs['keras_file']}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
