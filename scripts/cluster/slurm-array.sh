#!/bin/bash
# A Slurm job array of search workers on one study: every task runs the same command on the
# CPUs Slurm gives it (--workers auto: one trial per CPU), and together they stop at
# --n-trials. Slurm's SIGTERM at the time limit or on scancel stops each task cleanly: its
# running trials are marked failed and rerun by the next search on that study.
#
# From the repository, set up once on a disk every node mounts (bash scripts/setup.sh), with
# the study's database (or storage proxy) in the environment, which sbatch passes on:
#
#   export FASHION_TUNE_STORAGE=postgresql+psycopg://tuner@DBHOST/fashion_tune
#   sbatch scripts/cluster/slurm-array.sh
#
# Extra arguments go to python -m tuning.search (e.g. --space extended --epochs 20).
#SBATCH --job-name=fashion-tune
#SBATCH --array=1-8
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=02:00:00
set -euo pipefail
: "${FASHION_TUNE_STORAGE:?set it to the database URL of the study (or grpc://HOST:PORT of a proxy)}"
cd "${SLURM_SUBMIT_DIR:-$(dirname "${BASH_SOURCE[0]}")/../..}"
exec .venv/bin/python -m tuning.search --study-name "${STUDY:-shared}" \
    --n-trials "${N_TRIALS:-400}" "$@"
