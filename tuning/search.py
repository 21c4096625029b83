"""python -m tuning.search: run or resume an Optuna study of the tutorial network.

The process creates or resumes the study and loads the data, then either runs the trials
itself (``--workers 1``, or one trial left) or forks the workers ``--workers`` resolves to
(``auto`` by default: one per CPU core) and supervises them; each worker runs trials on the
data loaded once. Where a fork is not safe (``fork_is_safe``), the workers are fresh copies of
this command instead (``--worker k``), which load their own.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial

import torch

from model.data import DataError, Source, TrainValSplit
from model.kernels import fp32_kernel
from model.loops import EpochResult, flush_denormals, warm_up_optimizers
from tuning.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    claim_cores,
    fail,
    quiet_optuna,
    stoppable,
)
from tuning.cli.search_cluster import run_on_cluster
from tuning.cli.search_output import Progress, interrupted, summary
from tuning.cli.search_settings import (
    PROG,
    Prepared,
    SearchSettings,
    parse_settings,
)
from tuning.study.errors import UsageError
from tuning.study.lifecycle import count_finished
from tuning.study.secrets import STORAGE_ENV
from tuning.study.storage import heartbeat_of, release_connections
from tuning.workers.cluster import connect
from tuning.workers.cores import Layout, fork_is_safe, resolve_workers, threads_per_worker
from tuning.workers.signals import (
    Stopped,
    die_with_parent,
    exit_status,
    parent_gone,
    stop_reason,
    supervisor_pid,
)
from tuning.workers.supervisor import Forked, Process, WorkerExit, supervise, without_flag
from tuning.workers.trial_loop import run_trials


def _say_waiting(line: str) -> None:
    """What the search waits for while another process sets the study up, on stderr."""
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def _announce(run: Prepared, threads: str | None) -> None:
    """The first lines: the study, the data, how the trials share the machine (``threads``;
    a worker, None: one line)."""
    settings, data = run.settings, run.data
    assert data is not None
    if threads is None:
        print(f"worker {settings.worker} of {settings.workers}: pid {os.getpid()}, torch "
              f"threads {torch.get_num_threads()}.", flush=True)
        return
    print(
        f"Study {settings.study_name!r} in {run.location.shown} "
        f"({'resumed' if run.resumed else 'new'}): {count_finished(run.study)} of "
        f"{settings.n_trials} trials finished."
    )
    print(
        f"Data: {len(data.train)} train / {len(data.val)} validation images from "
        f"{run.source.folder} ({run.source.how}); device {run.device}, {threads}, "
        f"precision {run.precision.value}; {settings.epochs} epochs per trial, sampler "
        f"{settings.sampler}, pruner {settings.pruner}, seed {settings.seed}, space "
        f"{run.space.name}.",
        flush=True,
    )
    kernel = fp32_kernel(run.device)
    print(f"Precision {run.precision.value}: {run.precision.reason}. Float32 products on "
          f"{kernel.value}: {kernel.reason}.", flush=True)


def _run_here(run: Prepared) -> int:
    """Run trials in this process until the study reaches its target."""
    settings = run.settings
    assert run.data is not None
    progress = Progress(settings.n_trials, live=sys.stderr.isatty())
    on_epoch = progress.epoch
    parent = supervisor_pid() if settings.worker else None
    if parent is not None:

        def on_epoch(trial: int, result: EpochResult) -> None:
            # Where no parent-death signal exists (not Linux): notice an orphaning here.
            if parent_gone(parent):
                raise Stopped(signal.SIGTERM)
            progress.epoch(trial, result)

    try:
        run_trials(run.study, run.objective(on_epoch), settings.n_trials,
                   storage_url=run.location.shown, heartbeat=heartbeat_of(run.storage),
                   timeout=settings.timeout, callbacks=[progress.trial],
                   before_trial=run.before_trial())
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: signals.Stopped
        if not settings.worker:  # a worker's supervisor reports
            interrupted(run.study, settings.n_trials, run.location.shown, 1, stop_reason(exc))
        return exit_status(exc)
    except Exception as exc:  # a trial failed for a reason other than divergence
        return fail(PROG, f"a trial failed and the search stopped: {exc!r}", status=EXIT_FAILED)
    return EXIT_OK


def _supervise(run: Prepared, layout: Layout, argv: Sequence[str] | None) -> int:
    """Run ``layout.workers`` workers on the study, wait for them, say how it ended."""
    settings = run.settings

    def warn(worker: WorkerExit) -> None:
        print(f"{PROG}: warning: {worker.describe()}.", file=sys.stderr, flush=True)

    # A gRPC channel (a storage proxy's client) and CUDA, once this process touched it, do not
    # survive a fork: fresh workers then.
    if (fork_is_safe(layout.threads) and run.location.kind != "proxy"
            and run.device.type == "cpu"):
        assert run.data is not None
        loaded = (run.source, run.data)
        warm_up_optimizers()  # imported once here, not once per worker
        release_connections(run.storage)  # each worker opens its own

        def start(k: int, env: Mapping[str, str]) -> Process:
            return Forked(partial(_forked_worker, settings, layout, k, loaded), env)

        outcome = supervise(start, layout.workers, on_exit=warn)
    else:
        # The storage URL reaches the workers in their environment, not their argument
        # lists, which any user of the machine can read (ps): it may hold a password.
        args = without_flag(sys.argv[1:] if argv is None else argv, "--storage")
        args = [*without_flag(args, "--workers"), "--workers", str(layout.workers)]
        outcome = supervise([sys.executable, "-m", "tuning.search", *args], layout.workers,
                            on_exit=warn, env={STORAGE_ENV: run.location.url})
    run.data = None
    if outcome.interrupted is not None:
        interrupted(run.study, settings.n_trials, run.location.shown, layout.workers,
                    stop_reason(outcome.interrupted))
        return exit_status(outcome.interrupted)
    failed = "; ".join(w.describe() for w in outcome.failed) or "no worker failed"
    try:
        finished = count_finished(run.study)
    except Exception as exc:  # the storage went away while the workers ran (they said so)
        return fail(PROG, f"the workers stopped ({failed}) and the study cannot be read now: "
                    f"{exc}. Their output above says why; run the same command again once "
                    f"{run.location.shown} answers.", status=EXIT_FAILED, exc=exc)
    if finished < settings.n_trials:
        return fail(
            PROG,
            f"the workers stopped with {finished} of {settings.n_trials} trials finished "
            f"({failed}); their output above says why. Run the same command again to finish "
            "the rest.",
            status=EXIT_FAILED,
        )
    return EXIT_OK


def _forked_worker(settings: SearchSettings, layout: Layout, k: int,
                   loaded: tuple[Source, TrainValSplit]) -> int:
    """Worker ``k``, forked by the supervisor: its threads, then trials on the loaded data."""
    torch.set_num_threads(layout.threads)
    return _work(replace(settings, worker=k, workers=layout.workers), loaded)


def _work(settings: SearchSettings, loaded: tuple[Source, TrainValSplit] | None = None) -> int:
    """A worker's life: open the study (its own connection), run trials until the target."""
    parent = supervisor_pid()
    if parent is not None:
        die_with_parent(parent)  # no orphan keeps training after its supervisor died
    try:
        run = settings.prepare(on_wait=_say_waiting, loaded=loaded)
    except (UsageError, DataError) as exc:
        return fail(PROG, str(exc), exc=exc)
    _announce(run, None)
    if count_finished(run.study) >= settings.n_trials:
        return EXIT_OK
    return _run_here(run)


def _on_cluster(settings: SearchSettings, address: str) -> int:
    """The search with its worker loops on the Dask cluster at ``address``.

    Raises:
        UsageError, DataError: bad input, or no cluster there; nothing was written.
    """
    settings.check()  # Dask installed, flags sane: before connecting
    with connect(address) as client:  # no study is created for a cluster that is not there
        run = settings.prepare(on_wait=_say_waiting)
        _announce(run, f"worker loops on the Dask cluster at {address}")
        run.data = None  # each Dask worker loads its own
        if count_finished(run.study) >= settings.n_trials:
            print("The study already reached its target; raise --n-trials to run more.")
        elif (status := run_on_cluster(run, client, address)) != EXIT_OK:
            return status
    print(summary(run.study, run.location.shown, settings.study_name))
    return EXIT_OK


@stoppable(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Run the search; return the process exit status."""
    settings = parse_settings(argv)
    quiet_optuna()  # our own lines report each trial
    flush_denormals()  # before torch starts its thread pool, which inherits it
    if settings.worker:  # a fresh interpreter started by a supervisor that could not fork
        # Before torch starts its thread pool.
        torch.set_num_threads(threads_per_worker(int(settings.workers)))
        return _work(settings)
    own_threads = torch.get_num_threads()
    if settings.workers != 1:
        # Workers may be forked from this process: it keeps torch to one thread until then,
        # since GNU OpenMP cannot run a thread pool in the child of a process that had one.
        torch.set_num_threads(1)
    try:
        if settings.cluster is not None:
            return _on_cluster(settings, settings.cluster)
        run = settings.prepare(on_wait=_say_waiting)
        layout = resolve_workers(settings.workers, run.device.type,
                                 settings.n_trials - count_finished(run.study))
    except (UsageError, DataError) as exc:
        return fail(PROG, str(exc), exc=exc)
    if layout.workers == 1:
        torch.set_num_threads(own_threads)  # one process: every core, as torch sets it
        layout = replace(layout, threads=own_threads)
    _announce(run, layout.describe())
    if count_finished(run.study) >= settings.n_trials:
        print("The study already reached its target; raise --n-trials to run more.")
    elif layout.workers > 1:
        # The supervisor claims its workers' threads; the workers claim nothing themselves.
        claim_cores(PROG, run.device.type, layout.workers * layout.threads)
        status = _supervise(run, layout, argv)
        if status != EXIT_OK:
            return status
    else:
        claim_cores(PROG, run.device.type, torch.get_num_threads())
        status = _run_here(run)
        if status != EXIT_OK:
            return status
    print(summary(run.study, run.location.shown, settings.study_name))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
