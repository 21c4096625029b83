"""What python -m tuning.search prints: a line per trial, live epochs, the summary."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from model.loops import EpochResult
from tuning.cli.artifact_output import dashboard_command
from tuning.results.artifacts import default_artifact_dir
from tuning.results.files import DEFAULT_OUT
from tuning.space.hyperparameters import describe
from tuning.study.baseline import finished_baseline, pruned_at
from tuning.study.lifecycle import count_finished, count_states
from tuning.study.names import file_name_problem
from tuning.study.protocol import DIVERGED, PRUNED_REASON_ATTR
from tuning.study.secrets import masked
from tuning.study.storage import Location

PARAMS_WIDTH = 30  # describe(params) padded to this, so the trial lines stay in columns


class Progress:
    """Prints a line per finished trial; on a terminal, also a live line per epoch."""

    def __init__(self, target: int, live: bool) -> None:
        self.target = target
        self.live = live

    def epoch(self, trial: int, result: EpochResult) -> None:
        if self.live:
            print(
                f"\r  trial {trial} epoch {result.epoch}/{result.epochs}: "
                f"val acc {result.val_accuracy:.4f}, {result.seconds:.1f} s/epoch   ",
                end="", file=sys.stderr, flush=True,
            )

    def trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.live:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
        finished = count_finished(study)
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        state = trial.state.name
        if trial.state == TrialState.PRUNED:
            diverged = trial.user_attrs.get(PRUNED_REASON_ATTR, "").startswith(DIVERGED)
            state += " nan" if diverged else f" @{trial.last_step}"
        value = "  -   " if trial.value is None else f"{trial.value:.4f}"
        try:
            best = f"{study.best_value:.4f}"
        except ValueError:  # no completed trial yet
            best = "  -   "
        params = describe(trial.params).ljust(PARAMS_WIDTH)
        print(
            f"[{finished:>3}/{self.target}] trial {trial.number:>3}  {params} "
            f"{state:<11} val acc {value}  best {best}  {seconds:6.1f} s",
            flush=True,
        )


def _tutorial_line(trial: optuna.trial.FrozenTrial) -> str:
    """How the tutorial's configuration did: its value, or where the pruner stopped it."""
    head = f"Tutorial configuration (trial {trial.number}): "
    if trial.state == TrialState.COMPLETE:
        return head + f"validation accuracy {trial.value:.4f}"
    stop = pruned_at(trial)
    where = f" after epoch {stop[0]} at validation accuracy {stop[1]:.4f}" if stop else ""
    return head + f"pruned{where} (behind the trials that went on)"


def summary(study: optuna.Study, storage_url: str, study_name: str) -> str:
    counts = count_states(study)
    lines = [
        f"Trials: {counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['fail']} failed."
    ]
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if completed:
        best = study.best_trial
        lines.append(f"Best trial {best.number}: validation accuracy {best.value:.4f}")
        lines += [f"  {key}: {value}" for key, value in best.params.items()]
        baseline = finished_baseline(study)
        if baseline is not None:
            lines.append(_tutorial_line(baseline))
    lines += next_steps(storage_url, study_name)
    return "\n".join(lines)


def _shell_setup() -> str:
    """The line that makes a fresh shell ready for the next steps: this folder (the storage
    and the files written are relative to it), and this interpreter's virtual environment."""
    here = Path.cwd()
    line = f"cd {shlex.quote(str(here))}"
    venv = Path(sys.prefix)
    if sys.prefix != sys.base_prefix and (venv / "bin" / "activate").exists():
        shown = venv.relative_to(here) if venv.is_relative_to(here) else venv
        line += f" && source {shlex.quote(str(shown / 'bin' / 'activate'))}"
    return line


def next_steps(storage_url: str, study_name: str) -> list[str]:
    """The pipeline's next commands for this study, to paste into a fresh shell as printed.

    A password in ``storage_url`` is shown masked: the user puts it back, or better keeps it
    out of the URL (``$FASHION_TUNE_STORAGE``, ``PGPASSWORD``: docs/scale-out.md).
    """
    name = shlex.quote(study_name)
    default = (file_name_problem(study_name) is None
               and storage_url == Location.default(study_name).url)
    storage = "" if default else f" --storage {shlex.quote(masked(storage_url))}"
    study = f"--study-name {name}{storage}"
    config = shlex.quote(f"{DEFAULT_OUT}/{study_name}-best.json")
    artifacts = default_artifact_dir(Location.parse(storage_url))  # where train uploads
    steps = [
        (_shell_setup(), "a fresh shell: this folder, the suite's commands"),
        (f"python -m tuning.confirm {study}", "the best configurations again, fresh seeds"),
        (f"python -m tuning.export {study}", f"{config} and the trials as CSV"),
        (f"python -m tuning.train --config {config}{storage}", "train, then test once"),
        (f"python -m tuning.report {study}", "pictures and index.html"),
        (dashboard_command(storage_url, artifacts, study_name),
         "browse it: http://127.0.0.1:8080/"),
    ]
    width = max(len(command) for command, _ in steps)
    return ["Next steps (paste into a shell, one line at a time or all):",
            *(f"  {command.ljust(width)}  # {why}" for command, why in steps)]


def interrupted(study: optuna.Study, target: int, storage_url: str, workers: int,
                reason: str = "Interrupted") -> None:
    """Say how many trials are kept after a stop signal, and how to finish the rest."""
    print(
        f"\n{reason}. {count_finished(study)} of {target} trials are "
        f"finished and saved in {storage_url}; the interrupted "
        f"{'ones are' if workers > 1 else 'one is'} marked failed. Run the same "
        "command again to finish the rest.",
        file=sys.stderr,
    )
