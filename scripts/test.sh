#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: creates .venv, installs the
# package with its test extras and the Node packages of the neffos.js tests,
# then runs lint, type checks and pytest. Extra arguments go to pytest.
#
# Installs happen only when needed: each is recorded in a stamp file keyed on the
# files it came from (pyproject.toml and the version for pip, the lockfile for
# npm), so a second start goes straight to the tests. NEFFOS_REINSTALL=1 forces
# both installs.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
venv

# pip: the version is read from src/neffos/__init__.py at install time, so it is in the key.
stamp=.venv/.neffos-test.stamp
want=$(key pyproject.toml src/neffos/__init__.py)
if ! up_to_date "$stamp" "$want"; then
    rm -f "$stamp"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[test]'
    echo "$want" > "$stamp"
fi

if command -v npm >/dev/null 2>&1; then
    # npm ci empties node_modules first, so the stamp inside it goes too.
    stamp=tests/js/node_modules/.neffos-test.stamp
    want=$(key tests/js/package.json tests/js/package-lock.json)
    if ! up_to_date "$stamp" "$want"; then
        npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
        echo "$want" > "$stamp"
    fi
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

# tests/test_proxy.py runs Debian's nginx in front of a server (as a plain process).
if [ ! -x /usr/sbin/nginx ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq nginx; } >/dev/null 2>&1; then
        echo "could not install nginx: the reverse proxy tests will be skipped" >&2
    fi
fi

.venv/bin/ruff check src tests examples
.venv/bin/mypy --strict src
.venv/bin/python -m pytest "$@"
