#!/usr/bin/env bash
# Set everything up, check style and types, then run the whole test suite (slow tests included).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k spec -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
paths=$(ls -d src tests benchmarks examples 2>/dev/null || true)
echo "== ruff check"; .venv/bin/ruff check $paths
echo "== ruff format --check"; .venv/bin/ruff format --check $paths
echo "== mypy"; .venv/bin/mypy src
echo "== pytest"
# Two workers (CI has 2 cores; most tests wait on processes); CAUCE_TEST_WORKERS=0 runs them in
# this process. Each worker builds the shared clusters it needs (tests/conftest.py).
workers=${CAUCE_TEST_WORKERS:-2}
if [ "$workers" = 0 ]; then exec .venv/bin/python -m pytest "$@"; fi
exec .venv/bin/python -m pytest -n "$workers" --durations=25 "$@"
