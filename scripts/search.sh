#!/usr/bin/env bash
# Set everything up, then run a short default search on the embedded SQLite default.
# Extra arguments go to python -m tuning.search, e.g. bash scripts/search.sh --n-trials 30.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec "$VENV/bin/python" -m tuning.search --n-trials 8 --epochs 3 "$@"
