#!/usr/bin/env bash
# Sets up .venv and runs the whole test suite (about 10 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
.venv/bin/ruff check --quiet tf_mtml trainers export tests bench
exec .venv/bin/python -m pytest -n 2 --dist loadfile -q tests "$@"
