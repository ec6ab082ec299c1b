#!/usr/bin/env bash
# Set everything up, then run the main example end to end: a 2-rank PyTorch DDP job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/cauce run examples/ddp/job.yaml "$@"
