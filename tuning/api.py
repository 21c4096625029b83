"""fashion-tune from Python: search, confirm, export and train, returning values, printing nothing.

For a notebook. Each call takes the command's flags as keyword arguments with the command's
defaults (``--n-trials`` is ``n_trials``), checks them as the command does (a bad value raises
``tuning.study.errors.UsageError`` with the same message), and returns an Optuna study or plain
data::

    from tuning import api

    study = api.search("nb", n_trials=8, epochs=3)     # an optuna.Study
    config = api.confirm("nb", top=2, seeds=2)         # the chosen configuration, a dict
    config = api.export("nb")                          # the same dict; writes studies/nb-best.json
    metrics = api.train("nb")                          # test metrics, a dict
    model = api.load_model("nb")                       # the retrained network, from its artifact

Everything runs in this process (``workers`` must be 1: ``python -m tuning.search --workers N``
supervises processes). Errors are the library's: ``UsageError`` (``StudyError`` is one) and
``model.data.DataError``, each saying how to fix it; any other exception is a bug. docs/api.md
has the example.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import torch

from model.data import DEFAULT_DATA_DIR, load_searched_split
from model.loops import flush_denormals
from model.network import NeuralNetwork, load_trained
from tuning.cli.search_settings import SearchSettings
from tuning.results import confirmation
from tuning.results.artifacts import artifact_dir, fetch, open_store
from tuning.results.files import DEFAULT_OUT, best_config, metrics_path, weights_path
from tuning.results.files import export as write_export
from tuning.results.retraining import TrainSettings, finish, prepare
from tuning.results.selection import confirmed, record_run
from tuning.study.errors import StudyError, UsageError
from tuning.study.lifecycle import DEFAULT_STUDY_NAME, count_finished, load_study
from tuning.study.protocol import StudyRecord
from tuning.study.storage import Location, heartbeat_of
from tuning.training.device import resolve_device
from tuning.training.precision import DEFAULT_PRECISION, choose_precision
from tuning.training.retrain import retrain
from tuning.workers.trial_loop import run_trials

__all__ = ["confirm", "export", "get_study", "load_model", "search", "train"]

CONFIRM_TOP = 5  # python -m tuning.confirm's --top (tests/test_api.py keeps them equal)
CONFIRM_SEEDS = 3  # and its --seeds


def get_study(study_name: str = DEFAULT_STUDY_NAME, storage: str | None = None) -> optuna.Study:
    """The existing study ``study_name`` (in ``storage``, else ``studies/<name>.db``)."""
    return load_study(Location.of(storage, study_name), study_name)


def search(study_name: str = DEFAULT_STUDY_NAME, **options: Any) -> optuna.Study:
    """Run (or resume) a search until the study holds ``n_trials`` finished trials.

    ``options`` are python -m tuning.search's flags: ``storage``, ``n_trials``, ``epochs``,
    ``space``, ``sampler``, ``pruner``, ``seed``, ``data_dir``, ``device``, ``precision``, ...

    Raises:
        UsageError, DataError: bad input, before anything is written.
    """
    # Trials run in this process: one at a time unless the caller asks otherwise (refused).
    settings = replace(SearchSettings(), study_name=study_name, **{"workers": 1, **options})
    if settings.workers != 1 or settings.worker:
        raise UsageError("workers must be 1 here: trials run in this process; use python -m "
                         "tuning.search --workers N for more processes.")
    flush_denormals()  # as the commands do: trials here compute as a search's trials do
    run = settings.prepare()  # the command's own checks, in its order: bad input writes nothing
    if count_finished(run.study) < settings.n_trials:
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial
        try:
            run_trials(run.study, run.objective(), settings.n_trials,
                       storage_url=run.location.shown, heartbeat=heartbeat_of(run.storage),
                       timeout=settings.timeout, before_trial=run.before_trial())
        finally:
            optuna.logging.set_verbosity(verbosity)
    return run.study


def confirm(study_name: str = DEFAULT_STUDY_NAME, storage: str | None = None, *,
            top: int = CONFIRM_TOP, seeds: int = CONFIRM_SEEDS, device: str = "auto",
            precision: str = DEFAULT_PRECISION, data_dir: Path | None = None
            ) -> dict[str, Any]:
    """Train the ``top`` best configurations ``seeds`` more times; return the chosen one.

    As python -m tuning.confirm with ``--workers 1``: every run is recorded on the study at
    once, so a call that was interrupted resumes. Returns what ``export`` would write.

    Raises:
        UsageError, DataError: bad input; StudyError: no configuration was chosen.
    """
    for name, value in (("--top", top), ("--seeds", seeds)):
        if value < 1:
            raise UsageError(f"{name} must be at least 1, but got {value}.")
    study = get_study(study_name, storage)
    record = StudyRecord.from_attrs(study.user_attrs, study_name)
    planned = confirmation.plan(study, record, top, seeds)
    resolved = resolve_device(device)
    chosen_precision = choose_precision(precision, resolved).value
    stacked = confirmation.stack_seeds("auto", resolved).value == "yes"
    source, data = load_searched_split(data_dir or DEFAULT_DATA_DIR, record.val_size,
                                       record.split_seed, record.train_size)
    confirmation.save_plan(study, planned)
    confirmation.use(data, resolved, chosen_precision)
    by_number = {t.number: t for t in planned.trials}
    for run in confirmation.run_all(planned.tasks, 1, source.folder, record, chosen_precision,
                                    stacked):
        record_run(study, by_number[run.trial], run)
    choice, why = confirmed(study)
    if choice is None:
        raise StudyError(why)
    return best_config(study)


def export(study_name: str = DEFAULT_STUDY_NAME, storage: str | None = None, *,
           out: Path = DEFAULT_OUT) -> dict[str, Any]:
    """Write ``<study>-best.json`` and ``<study>-trials.csv`` into ``out``; return the first.

    Raises:
        StudyError: no such study, or no completed trial.
    """
    return write_export(get_study(study_name, storage), Path(out))[2]


def train(study_name: str | None = None, storage: str | None = None,
          **options: Any) -> dict[str, Any]:
    """Retrain the chosen configuration, score it once on the test split; return the metrics.

    ``options`` are python -m tuning.train's flags (``config``, ``epochs``, ``seed``,
    ``threads``, ``train_on``, ``out``, ``artifact_dir``, ``data_dir``, ``device``). Writes what
    the command writes: the weights, the metrics JSON, the test result on the study and its
    artifacts. The torch thread count it trains with is restored afterwards.

    Raises:
        UsageError, DataError, OSError: bad input, or a file cannot be written.
    """
    settings = replace(TrainSettings(), study_name=study_name, storage=storage, **options)
    device = resolve_device(settings.device)
    job = prepare(settings)
    before = torch.get_num_threads()
    threads = settings.threads or job.config.get("trial_threads")
    try:
        if threads is not None and device.type == "cpu":
            torch.set_num_threads(int(threads))
        result = retrain(job.params, job.train, job.val, job.epochs, job.seed, device)
        return finish(job, settings, result, device).metrics
    finally:
        torch.set_num_threads(before)


def load_model(study_name: str = DEFAULT_STUDY_NAME, storage: str | None = None, *,
               artifacts: Path | None = None) -> NeuralNetwork:
    """The study's retrained network, loaded from its current artifacts (in eval mode).

    ``artifacts``: the store train uploaded to (its ``artifact_dir``; default: beside the study).

    Raises:
        StudyError: the study has no retrained model in that artifact store.
    """
    location = Location.of(storage, study_name)
    study = load_study(location, study_name)
    store = open_store(artifact_dir(location, artifacts), create=False)
    with tempfile.TemporaryDirectory() as tmp:
        weights = fetch(study, store, weights_path(Path(), study_name).name, Path(tmp))
        metrics = json.loads(fetch(study, store, metrics_path(Path(), study_name).name,
                                   Path(tmp)).read_text(encoding="utf-8"))
        return load_trained(metrics["network"], weights)

