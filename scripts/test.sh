#!/usr/bin/env bash
# Set everything up, then run the whole test suite, slow real-data tests included.
# Extra arguments go to pytest, e.g. bash scripts/test.sh -m fast (the everyday tier).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec "$VENV/bin/python" -m pytest "$@"
