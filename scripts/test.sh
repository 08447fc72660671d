#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: creates .venv, installs the
# package with its test extras and the Node packages of the neffos.js tests,
# then runs lint, type checks and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

if command -v npm >/dev/null 2>&1; then
    npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
else
    echo "npm not found: the neffos.js interoperability tests will be skipped" >&2
fi

# The demo's browser test drives Debian's Chromium with playwright (no browser download).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq chromium; } >/dev/null 2>&1; then
        echo "could not install chromium: the demo's browser test will be skipped" >&2
    fi
fi

.venv/bin/ruff check src tests examples
.venv/bin/mypy --strict src
.venv/bin/python -m pytest "$@"
