"""python -m tuning.search: run or resume an Optuna study of the tutorial network.

One process runs the trials itself; with ``--workers N`` it creates or resumes the study, then
supervises N copies of itself (``--worker k``), which run the trials.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

import torch

from model.data import DataError
from model.kernels import fp32_kernel
from model.loops import EpochResult, flush_denormals
from tuning.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    claim_cores,
    fail,
    quiet_optuna,
    stoppable,
)
from tuning.cli.search_output import Progress, interrupted, summary
from tuning.cli.search_settings import (
    PROG,
    Prepared,
    parse_settings,
)
from tuning.study.errors import UsageError
from tuning.study.lifecycle import count_finished
from tuning.study.secrets import STORAGE_ENV
from tuning.study.storage import heartbeat_of
from tuning.workers.cores import threads_per_worker
from tuning.workers.signals import (
    Stopped,
    die_with_parent,
    exit_status,
    parent_gone,
    stop_reason,
    supervisor_pid,
)
from tuning.workers.supervisor import WorkerExit, supervise, without_flag
from tuning.workers.trial_loop import run_trials


def _say_waiting(line: str) -> None:
    """What the search waits for while another process sets the study up, on stderr."""
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def _announce(run: Prepared) -> None:
    settings, data = run.settings, run.data
    assert data is not None
    threads = f"torch threads {torch.get_num_threads()}"
    if settings.worker:
        print(f"worker {settings.worker} of {settings.workers}: pid {os.getpid()}, {threads}.",
              flush=True)
        return
    if settings.workers > 1:
        threads = (f"{settings.workers} workers x {threads_per_worker(settings.workers)} "
                   "torch threads")
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
            interrupted(run.study, settings.n_trials, run.location.shown, settings.workers,
                        stop_reason(exc))
        return exit_status(exc)
    except Exception as exc:  # a trial failed for a reason other than divergence
        return fail(PROG, f"a trial failed and the search stopped: {exc!r}", status=EXIT_FAILED)
    return EXIT_OK


def _supervise(run: Prepared, argv: Sequence[str] | None) -> int:
    """Run --workers copies of this command on the study, wait for them, say how it ended."""
    settings = run.settings
    # The storage URL reaches the workers in their environment, not their argument lists,
    # which any user of the machine can read (ps): it may hold a password.
    args = without_flag(sys.argv[1:] if argv is None else argv, "--storage")
    command = [sys.executable, "-m", "tuning.search", *args]

    def warn(worker: WorkerExit) -> None:
        print(f"{PROG}: warning: {worker.describe()}.", file=sys.stderr, flush=True)

    outcome = supervise(command, settings.workers, on_exit=warn,
                        env={STORAGE_ENV: run.location.url})
    if outcome.interrupted is not None:
        interrupted(run.study, settings.n_trials, run.location.shown, settings.workers,
                    stop_reason(outcome.interrupted))
        return exit_status(outcome.interrupted)
    finished = count_finished(run.study)
    if finished < settings.n_trials:
        failed = "; ".join(w.describe() for w in outcome.failed) or "no worker failed"
        return fail(
            PROG,
            f"the workers stopped with {finished} of {settings.n_trials} trials finished "
            f"({failed}); their output above says why. Run the same command again to finish "
            "the rest.",
            status=EXIT_FAILED,
        )
    return EXIT_OK


@stoppable(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Run the search; return the process exit status."""
    settings = parse_settings(argv)
    quiet_optuna()  # our own lines report each trial
    flush_denormals()  # before torch starts its thread pool, which inherits it
    if settings.worker:  # before torch starts its thread pool
        torch.set_num_threads(threads_per_worker(settings.workers))
        parent = supervisor_pid()
        if parent is not None:
            die_with_parent(parent)  # no orphan keeps training after its supervisor died
    try:
        run = settings.prepare(on_wait=_say_waiting)
    except (UsageError, DataError) as exc:
        return fail(PROG, str(exc), exc=exc)
    _announce(run)
    if count_finished(run.study) >= settings.n_trials:
        if settings.worker:
            return EXIT_OK
        print("The study already reached its target; raise --n-trials to run more.")
    elif settings.workers > 1 and not settings.worker:
        # The supervisor claims its workers' threads; the workers claim nothing themselves.
        claim_cores(PROG, run.device.type, settings.workers * threads_per_worker(settings.workers))
        run.data = None  # each worker loads its own copy
        status = _supervise(run, argv)
        if status != EXIT_OK:
            return status
    else:
        if not settings.worker:
            claim_cores(PROG, run.device.type, torch.get_num_threads())
        status = _run_here(run)
        if status != EXIT_OK or settings.worker:
            return status  # a worker's supervisor prints the summary
    print(summary(run.study, run.location.shown, settings.study_name))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
