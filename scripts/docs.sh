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

. scripts/lib.sh
venv

stamp=.venv/.neffos-docs.stamp
want=$(key pyproject.toml src/neffos/__init__.py)
if ! up_to_date "$stamp" "$want"; then
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
