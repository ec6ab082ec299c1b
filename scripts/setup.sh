#!/usr/bin/env bash
# Make .venv in the checkout with cauce (editable) and everything the examples and tests use,
# at the pinned versions of requirements/constraints.txt. Idempotent: a second run with the same
# requirements does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: cauce needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
if ! command -v java >/dev/null 2>&1; then
    echo "warning: java not found; Spark features need Java 17+" >&2
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi

stamp=$(cat pyproject.toml requirements/*.txt | sha256sum | cut -c1-16)
if [ "$(cat .venv/.cauce-setup 2>/dev/null || true)" != "$stamp" ]; then
    echo "setup: installing pinned requirements into .venv (a few minutes the first time)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        -c requirements/constraints.txt -r requirements/ci.txt \
        2> >(grep -v "^WARNING: Location 'file:" >&2)
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
        -r requirements/ci-nodeps.txt 2> >(grep -v "^WARNING: Location 'file:" >&2)
    echo "$stamp" > .venv/.cauce-setup
fi
# The portal's browser tests drive Debian's chromium through Playwright (no browser download);
# the completion test runs zsh; the PostgreSQL tests start their own server with PostgreSQL's
# initdb and postgres programs. Installed when missing and apt is there and usable (CI runs as
# root on Debian); else said once.
missing=()
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    missing+=(chromium)
fi
command -v zsh >/dev/null 2>&1 || missing+=(zsh)
if ! command -v initdb >/dev/null 2>&1 &&
    ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
    missing+=(postgresql)
fi
if [ ${#missing[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "setup: installing ${missing[*]} with apt-get (browser, zsh and PostgreSQL tests)"
        if ! { apt-get update -qq >/dev/null &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${missing[@]}" >/dev/null; }; then
            echo "warning: apt-get could not install ${missing[*]}; the tests that need them skip" >&2
        fi
    else
        echo "warning: ${missing[*]} not found; tests/test_ui.py (chromium), the zsh" \
            "completion test and tests/test_postgres.py (postgresql) skip" >&2
    fi
fi
.venv/bin/cauce --version
