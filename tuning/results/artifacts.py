"""A study's results as Optuna artifacts, which optuna-dashboard lists and serves for download.

The artifacts live in a folder beside the study (``optuna.artifacts.FileSystemArtifactStore``):
``studies/<study>.db`` keeps them in ``studies/<study>-artifacts/``, a journal file ``x.log`` in
``x-artifacts/``; a study on a database server has no file to sit beside, so its store is
``studies/artifacts/`` under the working folder unless ``--artifact-dir`` says otherwise.
Start optuna-dashboard by hand with ``--artifact-dir`` set to that folder.

They are uploaded to the study, not to a trial: the retrained model is not the result of the
trial it replays (by default it trains on more images, from another start), its test result is
already a study attribute, and the report's pictures and the chosen configuration describe the
study. A rerun does not pile up copies unannounced: a file whose bytes equal the current
artifact of its name is not uploaded again, and the study user attribute
``artifact:<file name>`` names the current artifact's id. Older ones stay listed as history
(Optuna has no way to drop an artifact's record, and optuna-dashboard's "delete" leaves a
``null`` record that ``optuna.artifacts.get_all_artifact_meta`` cannot read).
"""

from __future__ import annotations

import filecmp
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import (
    ArtifactMeta,
    FileSystemArtifactStore,
    download_artifact,
    upload_artifact,
)
from optuna.artifacts._upload import ARTIFACTS_ATTR_PREFIX  # the records' key, as Optuna writes
from optuna.artifacts.exceptions import ArtifactNotFound

from tuning.study.errors import StudyError
from tuning.study.protocol import ARTIFACT_ATTR_PREFIX
from tuning.study.storage import Location

ARTIFACTS_SUFFIX = "-artifacts"  # studies/<study>.db -> studies/<study>-artifacts/
SERVER_ARTIFACT_DIR = Path("studies") / "artifacts"  # a study on a server has no file beside


def default_artifact_dir(location: Location) -> Path:
    """The store beside the study at ``location`` (see the module's docstring)."""
    if location.path is None:
        return SERVER_ARTIFACT_DIR
    return location.path.with_name(location.path.stem + ARTIFACTS_SUFFIX)


def artifact_dir(location: Location, given: Path | None) -> Path:
    """``given`` (a tool's ``--artifact-dir``) where set, else the store beside the study."""
    return given if given is not None else default_artifact_dir(location)


def open_store(folder: Path, create: bool = True) -> FileSystemArtifactStore:
    """The artifact store in ``folder``, which is created if ``create``.

    Raises:
        StudyError: the folder cannot be created, or (``create`` False) does not exist.
    """
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudyError(f"cannot create the artifact folder {folder}: "
                             f"{exc.strerror or exc}; pass another --artifact-dir.") from None
    elif not folder.is_dir():
        raise StudyError(f"there is no artifact folder {folder}; python -m tuning.train "
                         "creates it, or pass the --artifact-dir it used.")
    return FileSystemArtifactStore(folder)


@dataclass(frozen=True)
class Published:
    """One file published as an artifact of a study."""

    filename: str
    artifact_id: str  # the current artifact of this name
    uploaded: bool  # False: the current one held these bytes already
    replaced: str | None = None  # the id it made no longer current, if any


def current_key(filename: str) -> str:
    """The study user attribute naming the current artifact of ``filename``."""
    return ARTIFACT_ATTR_PREFIX + filename


def current_ids(study: optuna.Study) -> dict[str, str]:
    """File name -> id of the study's current artifact of that name."""
    return {key[len(ARTIFACT_ATTR_PREFIX):]: str(value)
            for key, value in study.user_attrs.items() if key.startswith(ARTIFACT_ATTR_PREFIX)}


def current_artifacts(study: optuna.Study) -> dict[str, ArtifactMeta]:
    """File name -> meta of each current artifact of the study (older uploads left out).

    One deleted in optuna-dashboard is left out too: its record there is ``null``, which
    ``optuna.artifacts.get_all_artifact_meta`` cannot read (a TypeError in Optuna 5.1), so the
    records are read here, as Optuna's own functions read them.
    """
    ids = current_ids(study)
    records = study._storage.get_study_system_attrs(study._study_id)
    metas = {}
    for name, artifact_id in ids.items():
        record = records.get(ARTIFACTS_ATTR_PREFIX + artifact_id)
        if record is not None and json.loads(record) is not None:
            metas[name] = ArtifactMeta(**json.loads(record))
    return metas


def _same_bytes(store: FileSystemArtifactStore, artifact_id: str, path: Path) -> bool:
    """Whether the stored artifact ``artifact_id`` holds exactly the bytes of ``path``."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "current"
        try:
            download_artifact(artifact_store=store, file_path=str(copy), artifact_id=artifact_id)
        except ArtifactNotFound:
            return False
        return filecmp.cmp(copy, path, shallow=False)


def publish(study: optuna.Study, store: FileSystemArtifactStore, path: Path) -> Published:
    """Upload ``path`` as an artifact of ``study`` and make it the current one of its name.

    A file equal to the current artifact of its name is not uploaded again.

    Raises:
        OSError: the file cannot be read or the store not written.
    """
    key = current_key(path.name)
    previous = study.user_attrs.get(key)
    if previous is not None and _same_bytes(store, str(previous), path):
        return Published(path.name, str(previous), uploaded=False)
    artifact_id = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study)
    study.set_user_attr(key, artifact_id)
    return Published(path.name, artifact_id, uploaded=True,
                     replaced=None if previous is None else str(previous))


def fetch(study: optuna.Study, store: FileSystemArtifactStore, filename: str,
          to: Path) -> Path:
    """Download the study's current artifact ``filename`` into the folder ``to``.

    Raises:
        StudyError: the study has no artifact of that name, or the store lacks its bytes.
        FileExistsError: ``to`` holds a file of that name already.
    """
    ids = current_ids(study)
    if filename not in ids:
        raise StudyError(f"study {study.study_name!r} has no artifact {filename!r}; it has "
                         f"{', '.join(sorted(ids)) or 'none'}.")
    to.mkdir(parents=True, exist_ok=True)
    target = to / filename
    try:
        download_artifact(artifact_store=store, file_path=str(target), artifact_id=ids[filename])
    except ArtifactNotFound:
        raise StudyError(f"the artifact {filename!r} of study {study.study_name!r} is not in "
                         "this store; pass the --artifact-dir it was uploaded to.") from None
    return target


def publish_retrain(study: optuna.Study, store: FileSystemArtifactStore, weights: Path,
                    metrics_file: Path, metrics: dict[str, Any]) -> list[Published]:
    """Publish what ``python -m tuning.train`` wrote: weights, test metrics, confusion matrix.

    The confusion matrix is drawn as the report draws it (``confusion_matrix.png``), so the
    report's upload of the same picture is no second copy.
    """
    from tuning.results.pictures import draw_confusion  # matplotlib: only where it is drawn

    published = [publish(study, store, weights), publish(study, store, metrics_file)]
    with tempfile.TemporaryDirectory() as tmp:
        picture = draw_confusion(metrics, Path(tmp))
        published.append(publish(study, store, Path(tmp) / f"{picture.stem}.png"))
    return published
