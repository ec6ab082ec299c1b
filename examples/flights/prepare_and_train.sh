#!/bin/sh
# Prepare the flights dataset (a second run finds it up to date and does nothing), then train
# the model and the baseline on 2 ranks. Run from anywhere; paths are the repository's.
set -eu
cd "$(dirname "$0")/../.."
cauce prepare examples/flights/features.py:build --out data/flights
cauce run examples/flights/train.yaml
