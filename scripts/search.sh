#!/usr/bin/env bash
# Set everything up, then a two-minute demo search in its own study, demo (studies/demo.db):
# 24 trials x 2 epochs, enough for TPE to go past its 10 random start-up trials and for the
# pruner to keep several trials (docs/results.md, "The demo"). It ends by printing the next
# steps for that study, to paste into a fresh shell. Extra arguments go to
# python -m tuning.search, e.g. bash scripts/search.sh --n-trials 40 (a higher target resumes
# the demo study).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec "$VENV/bin/python" -m tuning.search --study-name demo --n-trials 24 --epochs 2 "$@"
