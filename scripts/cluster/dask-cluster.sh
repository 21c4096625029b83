#!/bin/bash
# A Dask cluster for `python -m tuning.search --cluster tcp://HOST:8786` (and confirm): one
# scheduler, and on each node one Dask worker process per core with one thread each (the
# layout measured fastest for this network: docs/decisions.md#trials-side-by-side). Each node
# needs the repository set up (bash scripts/setup.sh, then .venv/bin/pip install -e
# '.[cluster]'), on a disk every node mounts or in the same place on each.
#
#   on the head node:  DASK_HOST=10.0.0.1 scripts/cluster/dask-cluster.sh scheduler
#   on every node:     scripts/cluster/dask-cluster.sh worker tcp://10.0.0.1:8786
#   on one machine:    scripts/cluster/dask-cluster.sh local     (both; Ctrl-C stops both)
#   then, anywhere:    python -m tuning.search --cluster tcp://10.0.0.1:8786 \
#                          --storage postgresql+psycopg://tuner@DBHOST/fashion_tune
#
# A Dask scheduler runs whatever code its clients send: bind it (DASK_HOST) to a private
# network only, never to an address the internet reaches (or set up Dask's TLS). Environment:
# DASK_HOST (default 127.0.0.1), DASK_PORT (default 8786), NWORKERS (worker processes per
# node; default: the node's cores), PYTHON (default: the repository's .venv/bin/python).
# A worker process that dies is started again by its nanny; the scheduler reschedules its task.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
HOST=${DASK_HOST:-127.0.0.1}
PORT=${DASK_PORT:-8786}

usage() {
    sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
}

scheduler() {
    # No dashboard: it needs bokeh, which the cluster extra does not install.
    exec "$PYTHON" -m distributed.cli.dask_scheduler --host "$HOST" --port "$PORT" \
        --no-dashboard "$@"
}

workers() {
    local address=$1
    shift
    exec "$PYTHON" -m distributed.cli.dask_worker "$address" --nworkers "${NWORKERS:-$(nproc)}" \
        --nthreads 1 --no-dashboard "$@"
}

case "${1:-}" in
    scheduler) shift; scheduler "$@" ;;
    worker) [ $# -ge 2 ] || usage; shift; workers "$@" ;;
    local)
        shift
        "$PYTHON" -m distributed.cli.dask_scheduler --host "$HOST" --port "$PORT" \
            --no-dashboard &
        pids=$!
        trap 'kill $pids 2>/dev/null; wait $pids 2>/dev/null' EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
        echo "dask-cluster: scheduler at tcp://$HOST:$PORT; use --cluster tcp://$HOST:$PORT"
        "$PYTHON" -m distributed.cli.dask_worker "tcp://$HOST:$PORT" \
            --nworkers "${NWORKERS:-$(nproc)}" --nthreads 1 --no-dashboard "$@" &
        pids="$pids $!"
        wait -n
        ;;
    *) usage ;;
esac
