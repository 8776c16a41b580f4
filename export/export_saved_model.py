"""Exports a trained experiment as a SavedModel laid out for TF Serving.

    python -m export.export_saved_model --experiment=mmoe_synthetic --model_dir=/tmp/mmoe

writes MODEL_DIR/export/<version>/ (the next integer version) from the latest checkpoint in
MODEL_DIR: a `serving_default` signature taking the experiment's named inputs (one named output
per task, or the embeddings) and the family's extra signatures (`task_score`, `ood_score`,
`few_shot`), with TF Serving's warmup file `assets.extra/tf_serving_warmup_requests` built from
real examples, and MODEL_DIR/export/models.config for `tensorflow_model_server
--model_config_file`. Same as `trainers.train --mode=export`; `export/grpc_client.py` queries it.
"""

from __future__ import annotations

import sys

from absl import app, flags

from tf_mtml.configs import experiments  # noqa: F401  (registers every experiment)
from tf_mtml.configs.base import ConfigError
from tf_mtml.configs.registry import list_experiments
from tf_mtml.train.run import run_experiment
from trainers.train import build_params

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("experiment", None, "Registered experiment the checkpoint was trained "
                        f"with. Registered experiments: {', '.join(list_experiments())}.")
    flags.DEFINE_string("model_dir", None, "The trained run's model_dir (checkpoints and "
                        "params.yaml); the SavedModel goes to MODEL_DIR/export/<version>/.")
    flags.DEFINE_multi_string("config_file", [], "YAML config overrides, applied in order.")
    flags.DEFINE_string("params_override", "", "Dotted config overrides.")
    flags.mark_flags_as_required(["experiment", "model_dir"])


def main(argv) -> int:
    del argv
    try:
        params = build_params(FLAGS.experiment, FLAGS.model_dir, "export", FLAGS.config_file,
                              FLAGS.params_override, None, None, None)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    export_dir = run_experiment(params, "export", FLAGS.model_dir, FLAGS.experiment)["export_dir"]
    print(f"SavedModel (TF Serving layout): {export_dir}")
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
