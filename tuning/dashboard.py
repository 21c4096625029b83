"""python -m tuning.dashboard: serve a study's storage with optuna-dashboard on 127.0.0.1."""

from __future__ import annotations

import errno
import sys
from collections.abc import Sequence
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import optuna
from optuna_dashboard import wsgi

from tuning.cli.common import (
    EXIT_OK,
    HelpFormatter,
    Parser,
    add_study_arguments,
    fail,
    quiet_optuna,
    stoppable,
)
from tuning.results.artifacts import artifact_dir, open_store
from tuning.study.errors import StudyError, UsageError
from tuning.study.lifecycle import DEFAULT_STUDY_NAME
from tuning.study.storage import Location, open_storage
from tuning.study.storage_checks import check_existing
from tuning.workers.signals import exit_status

PROG = "python -m tuning.dashboard"
HOST = "127.0.0.1"  # this machine only: the dashboard can edit notes and delete studies
DEFAULT_PORT = 8080  # optuna-dashboard's own default


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    """Serves requests in threads, as optuna-dashboard's own command does."""

    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """Drops the per-request access log; errors still reach stderr."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def dashboard_urls(storage: optuna.storages.BaseStorage, port: int,
                   study_name: str) -> tuple[str, str | None]:
    """The dashboard's start page and the page of ``study_name`` (None if not stored there)."""
    base = f"http://{HOST}:{port}/dashboard/"
    names = optuna.get_all_study_names(storage)
    if study_name not in names:
        return base, None
    return base, f"{base}studies/{storage.get_study_id_from_name(study_name)}"


@stoppable(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Serve the dashboard until Ctrl-C; return the process exit status."""
    parser = Parser(
        prog=PROG,
        description="Start optuna-dashboard on a study's storage, on 127.0.0.1, and print its "
        "URL. Runs until Ctrl-C.",
        formatter_class=HelpFormatter,
    )
    add_study_arguments(parser, DEFAULT_STUDY_NAME)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port on 127.0.0.1")
    parser.add_argument("--verbose", action="store_true", help="log every request on stderr")
    parser.add_argument("--artifact-dir", type=Path, default=None,
                        help="Optuna artifact store to list and serve (default: beside the "
                        "study, where python -m tuning.train uploads: studies/<study-name>-"
                        "artifacts for the default storage)")
    args = parser.parse_args(argv)
    quiet_optuna()
    try:
        if not 0 < args.port < 65536:
            raise UsageError(f"--port must be between 1 and 65535, but got {args.port}.")
        location = Location.of(args.storage, args.study_name)
        url = location.shown
        check_existing(location, must_exist=True)
        storage = open_storage(location)
        start, study_page = dashboard_urls(storage, args.port, args.study_name)
        if study_page is None:  # a typo must not serve a storage silently
            names = ", ".join(optuna.get_all_study_names(storage)) or "none"
            raise StudyError(f"there is no study {args.study_name!r} in {url} (studies there: "
                             f"{names}); pass the --study-name the search used, or its --storage.")
        handler = WSGIRequestHandler if args.verbose else _QuietHandler
        folder = artifact_dir(location, args.artifact_dir)
        given = args.artifact_dir is not None  # a folder asked for must exist
        store = open_store(folder, create=False) if given or folder.is_dir() else None
        server = make_server(HOST, args.port, wsgi(storage, artifact_store=store),
                             server_class=_ThreadedServer, handler_class=handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return fail(PROG, f"port {args.port} on {HOST} is in use; pass another --port.")
        return fail(PROG, f"cannot listen on {HOST}:{args.port}: {exc.strerror or exc}.")
    except UsageError as exc:
        return fail(PROG, str(exc), exc=exc)
    try:  # from here on Ctrl-C is a clean stop, wherever it lands
        print(f"Dashboard of {url}: {start}", flush=True)
        if study_page is not None:
            print(f"Study {args.study_name!r}: {study_page}", flush=True)
        print(f"Artifacts: {folder}" if store is not None else
              f"Artifacts: none yet ({folder} does not exist; python -m tuning.train "
              "uploads there)", flush=True)
        print("Press Ctrl-C to stop.", file=sys.stderr, flush=True)
        server.serve_forever()
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: a clean stop
        print("Dashboard stopped.", file=sys.stderr)
        return exit_status(exc)
    finally:
        server.server_close()
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
