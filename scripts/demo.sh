#!/usr/bin/env bash
# The demo chat on http://127.0.0.1:8080/ (creates .venv and installs first):
# open the page in two browser tabs, or chat from a terminal with
# `.venv/bin/python -m neffos demo client --room lobby --user kim`.
# Extra arguments go to `python -m neffos demo` (e.g. --port 9000).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet -e .
exec .venv/bin/python -m neffos demo "$@"
