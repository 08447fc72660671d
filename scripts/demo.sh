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

PYTHON=${PYTHON:-python3}
# The Python that made .venv must be >= 3.11 (checked before any install).
supported='import sys; sys.exit(sys.version_info < (3, 11))'
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -c "$supported" 2>/dev/null; then
        echo "demo.sh: neffos needs Python >= 3.11 and '$PYTHON' is missing or older: run PYTHON=python3.11 $0 (or a newer Python)" >&2
        exit 1
    fi
    "$PYTHON" -m venv .venv
elif ! .venv/bin/python -c "$supported" 2>/dev/null; then
    echo "demo.sh: .venv was made by an unsupported Python ($(.venv/bin/python -V 2>&1 || echo 'it does not run')); neffos needs >= 3.11: rm -rf .venv and run PYTHON=python3.11 $0 (or a newer Python)" >&2
    exit 1
fi

# The same key as scripts/test.sh: the files the install came from, and the Python.
want=$(.venv/bin/python - pyproject.toml src/neffos/__init__.py <<'PY'
import hashlib, sys
digest = hashlib.sha256(sys.version.encode())
for name in sys.argv[1:]:
    digest.update(name.encode() + b"\0" + open(name, "rb").read() + b"\0")
print(digest.hexdigest())
PY
)
installed() {
    [ "${NEFFOS_REINSTALL:-}" != 1 ] && [ -f "$1" ] && [ "$(cat "$1")" = "$want" ]
}
if ! installed .venv/.neffos-demo.stamp && ! installed .venv/.neffos-test.stamp; then
    rm -f .venv/.neffos-demo.stamp
    .venv/bin/python -m pip install --quiet -e .
    echo "$want" > .venv/.neffos-demo.stamp
fi
exec .venv/bin/python -m neffos demo "$@"
