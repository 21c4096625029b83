"""A storage password appears in no output; a study name never becomes a path outside its folder.

Fast tier: no server. The tools meet a closed port (nothing listens on port 1), and study names
that would escape studies/ or hide a file. tests/test_secrets_postgres.py has the real servers.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import optuna
import pytest

from tests.conftest import Searched, run_main
from tuning.study import secrets
from tuning.study.names import MAX_NAME_CHARS, file_name_problem
from tuning.workers.supervisor import without_flag

PASSWORD = "Hunter2-x@y%z"  # '@' and '%' make a URL percent-encode it: both spellings hidden
ENCODED = "Hunter2-x%40y%25z"
CLOSED = f"postgresql+psycopg://tuner:{ENCODED}@127.0.0.1:1/x"  # nothing listens on port 1
TOOLS = ("search", "confirm", "export", "train", "report", "dashboard", "whatif")
BAD_NAMES = {
    "../escaped": "path separator",
    "a/b": "path separator",
    "a\\b": "path separator",
    "..": "'..'",
    "x..y": "'..'",
    ".hidden": "starts with a dot",
    "bell\x07": "control character",
    "new\nline": "control character",
    "x" * (MAX_NAME_CHARS + 1): "characters",
}


def hidden(password: str, *texts: str, folder: Path | None = None) -> None:
    """Assert ``password`` (as is or percent-encoded) is in no ``texts``, no file of ``folder``."""
    from urllib.parse import quote

    spellings = {password, quote(password, safe="")}
    for text in texts:
        for spelling in spellings:
            assert spelling not in text, text
    for path in (folder.rglob("*") if folder is not None else ()):
        if path.is_file():
            data = path.read_bytes()
            for spelling in spellings:
                assert spelling.encode() not in data, f"{path} holds the password"


def tiny(tool: str, data: Path) -> tuple[str, ...]:
    """Flags that make ``tool`` train on the synthetic data in ``data``, briefly."""
    if tool == "search":
        return ("--data-dir", str(data), "--val-size", "100", "--n-trials", "1", "--epochs", "1")
    return ("--data-dir", str(data)) if tool in ("confirm", "train") else ()


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_masked_hides_the_password_and_keeps_the_rest() -> None:
    assert secrets.masked(CLOSED) == "postgresql+psycopg://tuner:***@127.0.0.1:1/x"
    assert secrets.masked("sqlite:///studies/x.db") == "sqlite:///studies/x.db"
    assert secrets.masked("postgresql://u@h/db") == "postgresql://u@h/db"
    assert secrets.password_of(CLOSED) == PASSWORD
    # Not a URL SQLAlchemy parses: the user:password@ part is masked all the same.
    assert secrets.masked("postgresql+psycopg://u:pw@h:port/db") == (
        "postgresql+psycopg://u:***@h:port/db")


def test_scrub_takes_out_every_spelling_of_a_remembered_password() -> None:
    secrets.remember(CLOSED)
    text = f"failed: password={PASSWORD} url=postgresql://tuner:{ENCODED}@h/x"
    assert secrets.scrub(text) == "failed: password=*** url=postgresql://tuner:***@h/x"


def test_log_records_and_their_tracebacks_are_scrubbed(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    secrets.install_scrubber()
    secrets.remember(CLOSED)
    logger = logging.getLogger("test_secrets")
    logger.addHandler(handler := logging.StreamHandler(sys.stderr))
    try:
        try:
            raise RuntimeError(f"driver said {CLOSED}")
        except RuntimeError:
            logger.exception("connecting to %s failed", CLOSED)
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "tuner:***@127.0.0.1" in err and "driver said" in err
    hidden(PASSWORD, err)


@pytest.mark.parametrize("tool", TOOLS)
def test_no_tool_shows_the_password_of_a_server_that_does_not_answer(tool: str, tmp_path: Path,
                                                                    idx_dir: Path) -> None:
    result = run_main(f"tuning.{tool}", "--storage", CLOSED, *tiny(tool, idx_dir), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "tuner:***@127.0.0.1:1/x" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    hidden(PASSWORD, result.stdout, result.stderr, folder=tmp_path)


def test_an_unparsable_url_is_shown_masked(tmp_path: Path) -> None:
    result = run_main("tuning.export", "--storage", "postgresql+psycopg://u:Zebra99@h:port/db",
                      cwd=tmp_path)
    assert result.returncode == 2
    assert "u:***@h:port" in result.stderr
    hidden("Zebra99", result.stdout, result.stderr)


def test_the_storage_url_may_come_from_the_environment(searched: Searched, tmp_path: Path
                                                       ) -> None:
    env = {secrets.STORAGE_ENV: searched.url}
    result = run_main("tuning.export", "--out", str(tmp_path), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "fashion-mnist-best.json").exists()
    # --storage wins over the environment.
    result = run_main("tuning.export", "--storage", CLOSED, cwd=tmp_path, env=env)
    assert result.returncode == 2 and "port 1" in result.stderr


@pytest.mark.parametrize("help_of", TOOLS)
def test_help_names_the_environment_variable(help_of: str, tmp_path: Path) -> None:
    result = run_main(f"tuning.{help_of}", "--help", cwd=tmp_path)
    assert secrets.STORAGE_ENV in " ".join(result.stdout.split())


def test_workers_get_the_storage_in_their_environment_not_their_arguments() -> None:
    argv = ["--storage", CLOSED, "--n-trials", "4", "--storage=x", "--stor", "y", "--st", "z"]
    assert without_flag(argv, "--storage") == ["--n-trials", "4", "--st", "z"]


@pytest.mark.parametrize("name", list(BAD_NAMES))
def test_names_that_would_become_paths_are_described(name: str) -> None:
    problem = file_name_problem(name)
    assert problem is not None and BAD_NAMES[name] in problem
    assert file_name_problem("fashion-mnist_2 (lr=1e-3)") is None


@pytest.mark.parametrize("name", list(BAD_NAMES))
def test_search_refuses_a_name_its_default_storage_would_turn_into_a_path(name: str,
                                                                         tmp_path: Path,
                                                                         idx_dir: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    before = tree(tmp_path)
    result = run_main("tuning.search", "--study-name", name, *tiny("search", idx_dir), cwd=work)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "cannot name a file" in result.stderr and "at most 100 characters" in result.stderr
    assert tree(tmp_path) == before  # nothing written, inside the folder or beside it


@pytest.fixture
def escaped(searched: Searched, tmp_path: Path) -> Searched:
    """A copy of the searched study, also stored under the name '../escaped', as plain Optuna
    lets anyone name a study."""
    copy = searched.copy_to(tmp_path)
    optuna.copy_study(from_study_name=copy.name, from_storage=copy.url, to_storage=copy.url,
                      to_study_name="../escaped")
    return Searched(copy.dir, copy.path, copy.data, "../escaped")


@pytest.mark.parametrize("tool", ["export", "report"])
def test_writers_refuse_such_a_name_and_write_nothing(escaped: Searched, tool: str) -> None:
    work = escaped.dir / "work"
    work.mkdir()
    before = tree(escaped.dir)
    result = run_main(f"tuning.{tool}", "--study-name", escaped.name, "--storage", escaped.url,
                      cwd=work)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot name a file" in result.stderr
    assert tree(escaped.dir) == before


def test_such_a_study_is_read_with_its_storage_and_written_with_explicit_names(
        escaped: Searched) -> None:
    out = escaped.dir / "out"
    args = ("--study-name", escaped.name, "--storage", escaped.url)
    result = run_main("tuning.whatif", *args, cwd=escaped.dir)
    assert result.returncode == 0, result.stderr
    result = run_main("tuning.export", *args, "--out", str(out), "--prefix", "escaped",
                      cwd=escaped.dir)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "escaped-best.json", "escaped-epochs.csv", "escaped-trials.csv"]
    result = run_main("tuning.export", *args, "--prefix", "../still-no", cwd=escaped.dir)
    assert result.returncode == 2 and "--prefix" in result.stderr
    result = run_main("tuning.report", *args, "--out", str(out / "report"), cwd=escaped.dir)
    assert result.returncode == 0, result.stderr
    assert (out / "report" / "index.html").exists()
    assert not (escaped.dir.parent / "escaped-best.json").exists()


def test_train_refuses_such_a_name_before_training_and_takes_a_prefix(escaped: Searched
                                                                      ) -> None:
    out = escaped.dir / "out"
    args = ("--study-name", escaped.name, "--storage", escaped.url, "--data-dir",
            str(escaped.data), "--out", str(out), "--epochs", "1")
    before = tree(escaped.dir)
    result = run_main("tuning.train", *args, cwd=escaped.dir)
    assert result.returncode == 2 and "cannot name a file" in result.stderr
    assert "Retraining" not in result.stdout
    assert tree(escaped.dir) == before
    result = run_main("tuning.train", *args, "--prefix", "escaped", cwd=escaped.dir)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["escaped-model.pt", "escaped-test.json"]
    assert "--metrics" in result.stdout  # the report it suggests names its files explicitly


def test_a_very_short_password_is_masked_in_urls_but_not_scrubbed_from_all_text() -> None:
    url = "postgresql+psycopg://u:ab@h/db"
    secrets.remember(url)
    assert secrets.masked(url) == "postgresql+psycopg://u:***@h/db"
    assert secrets.scrub("table abc") == "table abc"  # not garbled into "t***le ***c"
