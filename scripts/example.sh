#!/usr/bin/env bash
# Set everything up, then run the main example end to end: the flights pipeline (prepare the
# features, a small study, train the best configuration on 2 ranks, compare with the baseline,
# serve the model and ask it one prediction). Extra arguments go to `cauce run`: --serve keeps
# the server up, --force STEP reruns from a step.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/cauce run examples/flights/pipeline.yaml "$@"
