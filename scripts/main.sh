#!/usr/bin/env bash
# Sets up .venv, trains the default experiment (mmoe_synthetic, generated data) with
# evaluation, and exports a SavedModel for TF Serving. About 1-2 minutes on 2 CPU cores.
# MODEL_DIR defaults to runs/mmoe_synthetic; extra arguments go to the trainer.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
model_dir="${MODEL_DIR:-runs/mmoe_synthetic}"
.venv/bin/python -m trainers.train --experiment=mmoe_synthetic --model_dir="$model_dir" \
  --mode=train_and_eval "$@"
.venv/bin/python -m trainers.train --experiment=mmoe_synthetic --model_dir="$model_dir" \
  --mode=export "$@"
