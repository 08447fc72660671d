#!/usr/bin/env bash
# Build the documentation site into site/ with warnings as errors, or preview it:
#
#   scripts/docs.sh            mkdocs build --strict (what CI runs)
#   scripts/docs.sh serve      live preview on http://127.0.0.1:8000/ (extra arguments go to mkdocs)
#
# Creates .venv when there is none (the same one scripts/test.sh uses) and installs
# '.[docs]' only when needed: the install is recorded in a stamp keyed on
# pyproject.toml and the version, as in scripts/test.sh. NEFFOS_REINSTALL=1 forces it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
supported='import sys; sys.exit(sys.version_info < (3, 11))'
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -c "$supported" 2>/dev/null; then
        echo "docs.sh: neffos needs Python >= 3.11 and '$PYTHON' is missing or older: run PYTHON=python3.11 $0 (or a newer Python)" >&2
        exit 1
    fi
    "$PYTHON" -m venv .venv
elif ! .venv/bin/python -c "$supported" 2>/dev/null; then
    echo "docs.sh: .venv was made by an unsupported Python ($(.venv/bin/python -V 2>&1 || echo 'it does not run')); neffos needs >= 3.11: rm -rf .venv and run PYTHON=python3.11 $0 (or a newer Python)" >&2
    exit 1
fi

# key FILE...: a digest of the files' contents (and of the Python running it).
key() {
    .venv/bin/python - "$@" <<'PY'
import hashlib, sys
digest = hashlib.sha256(sys.version.encode())
for name in sys.argv[1:]:
    digest.update(name.encode() + b"\0" + open(name, "rb").read() + b"\0")
print(digest.hexdigest())
PY
}

stamp=.venv/.neffos-docs.stamp
want=$(key pyproject.toml src/neffos/__init__.py)
if [ "${NEFFOS_REINSTALL:-}" = 1 ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    rm -f "$stamp"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[docs]'
    echo "$want" > "$stamp"
fi

# Material for MkDocs prints a banner about its successor on every start.
export NO_MKDOCS_2_WARNING=1
if [ "${1:-}" = serve ]; then
    shift
    exec .venv/bin/mkdocs serve "$@"
fi
exec .venv/bin/mkdocs build --strict --site-dir site "$@"
