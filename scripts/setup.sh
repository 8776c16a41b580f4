#!/usr/bin/env bash
# Creates .venv with Python 3.11 and installs tf_mtml (editable) with the extras named in $1
# (default "test"). Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-test}"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then py="$candidate"; break; fi
  done
fi
if [ -z "$py" ] || ! "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "tf_mtml needs Python 3.11; found '${py:-none}'. Install Python 3.11 or set PYTHON=/path/to/python3.11." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[${extras}]" 2>&1 \
  | grep -v -E "^WARNING: Location 'file:" || true
.venv/bin/python -c "import tf_mtml" >/dev/null
