#!/usr/bin/env bash
# The demo chat on http://127.0.0.1:8080/ (creates .venv and installs first):
# open the page in two browser tabs, or chat from a terminal with
# `.venv/bin/python -m neffos demo client --room lobby --user kim`.
# Extra arguments go to `python -m neffos demo` (e.g. --port 9000).
#
# The package is installed only when .venv has no install made from the current
# pyproject.toml and version (a stamp file, shared in meaning with scripts/test.sh,
# whose test install includes the package); NEFFOS_REINSTALL=1 forces it. The
# demo installs neffos.js for its page itself, once, into a cache.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
venv

# The test install includes the package: either stamp will do.
want=$(key pyproject.toml src/neffos/__init__.py)
if ! up_to_date .venv/.neffos-demo.stamp "$want" && ! up_to_date .venv/.neffos-test.stamp "$want"; then
    rm -f .venv/.neffos-demo.stamp
    .venv/bin/python -m pip install --quiet -e .
    echo "$want" > .venv/.neffos-demo.stamp
fi
exec .venv/bin/python -m neffos demo "$@"
