"""Samplers and pruners by name, with the defaults chosen on recorded learning curves."""

from __future__ import annotations

import hashlib
import os
import socket
import warnings

import numpy as np
import optuna

from tuning.study.errors import StudyError

SAMPLERS = ("tpe", "random", "qmc")
PRUNERS = ("median", "hyperband", "successive-halving", "none")
DEFAULT_SAMPLER = "tpe"
DEFAULT_PRUNER = "successive-halving"  # chosen on recorded curves (docs/decisions.md)

# The defaults were chosen on recorded learning curves (docs/decisions.md, "Search defaults"):
TPE_STARTUP_TRIALS = 10  # random trials before TPE models the others
TPE_MULTIVARIATE = False  # independent TPE: as fast to 88% and gentler than multivariate
HALVING_REDUCTION = 4  # successive halving (the default pruner) keeps a quarter at each rung
MEDIAN_STARTUP_TRIALS = 5  # trials that finish unpruned before the median pruner judges others
MEDIAN_WARMUP_EPOCHS = 0  # a trial may be pruned from its first reported epoch on
HYPERBAND_REDUCTION = 3  # each of hyperband's brackets keeps about a third at each rung


def own_stream(worker: int = 0) -> tuple[int, ...]:
    """Entropy that sets this process's sampler apart from the others working on a study."""
    host = int.from_bytes(hashlib.sha256(socket.gethostname().encode()).digest()[:4], "big")
    return (worker, host, os.getpid())


def make_sampler(
    name: str, seed: int, n_trials_so_far: int = 0, stream: tuple[int, ...] = ()
) -> optuna.samplers.BaseSampler:
    """Sampler by name, seeded.

    A resumed run offsets the TPE and random seeds by the trials already in the study, so it
    does not replay the first run's random draws; QMC keeps its seed and continues its
    sequence, whose position Optuna stores in the study. A process that shares the study
    with others passes a ``stream`` (``own_stream()``) that is mixed into those seeds, else
    processes started together would all sample the same points.
    """
    run_seed = seed + n_trials_so_far
    if stream:
        entropy = np.random.SeedSequence([seed, n_trials_so_far, *stream])
        run_seed = int(entropy.generate_state(1)[0])
    if name == "tpe":
        # The constant liar only acts on trials other workers are running (--workers).
        return optuna.samplers.TPESampler(seed=run_seed, n_startup_trials=TPE_STARTUP_TRIALS,
                                          multivariate=TPE_MULTIVARIATE, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=run_seed)
    if name == "qmc":
        with warnings.catch_warnings():  # "experimental" says nothing a user can act on
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(
                seed=seed,
                scramble=True,
                # Batch size and optimizer are categorical: QMC leaves them to a random sampler.
                independent_sampler=optuna.samplers.RandomSampler(seed=run_seed),
                warn_independent_sampling=False,
            )
    raise StudyError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}.")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """Pruner by name; resources are epochs."""
    if name == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=MEDIAN_WARMUP_EPOCHS
        )
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=epochs, reduction_factor=HYPERBAND_REDUCTION
        )
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=HALVING_REDUCTION
        )
    if name == "none":
        return optuna.pruners.NopPruner()
    raise StudyError(f"unknown pruner {name!r}; choose from {', '.join(PRUNERS)}.")
