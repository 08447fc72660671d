# Sourced by scripts/test.sh, scripts/docs.sh and scripts/demo.sh (not run on its own):
# the .venv they share, and stamps that make a second start skip the installs.
#
#   venv                     make .venv with $PYTHON (default python3) when there is
#                            none; exit 1, saying what to do, when that Python or the
#                            one that made .venv is older than 3.11
#   key FILE...              a digest of the files' contents and of .venv's Python
#   up_to_date STAMP KEY     true when STAMP holds KEY and NEFFOS_REINSTALL is not 1
#
# The caller has cd'ed to the repository root; $script names it in messages.

script=$(basename "$0")
PYTHON=${PYTHON:-python3}

venv() {
    local supported='import sys; sys.exit(sys.version_info < (3, 11))'
    if [ ! -x .venv/bin/python ]; then
        if ! "$PYTHON" -c "$supported" 2>/dev/null; then
            echo "$script: neffos needs Python >= 3.11 and '$PYTHON' is missing or older: run PYTHON=python3.11 $0 (or a newer Python)" >&2
            exit 1
        fi
        "$PYTHON" -m venv .venv
    elif ! .venv/bin/python -c "$supported" 2>/dev/null; then
        echo "$script: .venv was made by an unsupported Python ($(.venv/bin/python -V 2>&1 || echo 'it does not run')); neffos needs >= 3.11: rm -rf .venv and run PYTHON=python3.11 $0 (or a newer Python)" >&2
        exit 1
    fi
}

key() {
    .venv/bin/python - "$@" <<'PY'
import hashlib, sys
digest = hashlib.sha256(sys.version.encode())
for name in sys.argv[1:]:
    digest.update(name.encode() + b"\0" + open(name, "rb").read() + b"\0")
print(digest.hexdigest())
PY
}

up_to_date() {
    [ "${NEFFOS_REINSTALL:-}" != 1 ] && [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]
}
