#!/usr/bin/env bash
# Run the demo application on 127.0.0.1:8080 (creates .venv and installs first).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/python examples/chat.py server --host 127.0.0.1 --port 8080 "$@"
