"""python -m tuning.proxy: serve a study database to many workers through Optuna's gRPC proxy.

Every worker of a large search opens its own database connections; hundreds of them overwhelm
a PostgreSQL server. This tool holds the connections in one process and serves the storage
over gRPC (Optuna's ``run_grpc_proxy_server``); every tool then takes
``--storage grpc://HOST:PORT``. It needs gRPC: ``pip install -e '.[grpc]'``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import optuna

from tuning.cli.common import EXIT_OK, HelpFormatter, Parser, fail, quiet_optuna, stoppable
from tuning.study.errors import UsageError
from tuning.study.grpc_proxy import require_grpc
from tuning.study.secrets import STORAGE_ENV, storage_from
from tuning.study.storage import Location, open_storage
from tuning.workers.signals import exit_status

PROG = "python -m tuning.proxy"
HOST = "127.0.0.1"  # this machine only by default: the proxy asks no password of its clients
PORT = 13000  # Optuna's own default for the proxy
THREADS = 16  # requests served at once; more clients wait their turn


def build_parser() -> Parser:
    parser = Parser(
        prog=PROG,
        description="Serve a study database through Optuna's gRPC storage proxy, so that "
        "many workers share it through one process's connections: every tool then takes "
        "--storage grpc://HOST:PORT. Runs until Ctrl-C or SIGTERM. Needs gRPC: pip install "
        "-e '.[grpc]'.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--storage", default=None,
                        help=f"database URL the proxy serves (default: ${STORAGE_ENV}); a "
                        "SQLite file or a database server, not a journal file; a password in "
                        "it is never shown")
    parser.add_argument("--host", default=HOST,
                        help="address to listen on; 0.0.0.0 serves other machines too (the "
                        "proxy has no authentication: only on a network you trust)")
    parser.add_argument("--port", type=int, default=PORT, help="port to listen on")
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="requests served at once")
    return parser


def _check(storage: str | None, port: int, threads: int) -> Location:
    """The storage to serve, after every flag is checked (UsageError names the first bad one)."""
    url = storage_from(storage)
    if url is None:
        raise UsageError(f"--storage is required (or ${STORAGE_ENV}): the database URL to "
                         "serve, e.g. postgresql+psycopg://USER@HOST/DB.")
    if not 0 < port < 65536:
        raise UsageError(f"--port must be between 1 and 65535, but got {port}.")
    if threads < 1:
        raise UsageError(f"--threads must be at least 1, but got {threads}.")
    location = Location.parse(url)
    if location.kind == "proxy":
        raise UsageError(f"--storage {location.shown} is a proxy already; give the database "
                         "URL it serves.")
    if location.kind == "journal":
        raise UsageError(f"--storage {location.shown} is a journal file, which Optuna's proxy "
                         "does not serve; put the study in a database (SQLite or a server).")
    return location


@stoppable(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Serve the storage until stopped; return the process exit status."""
    args = build_parser().parse_args(argv)
    quiet_optuna()
    try:
        location = _check(args.storage, args.port, args.threads)
        require_grpc(PROG)
        storage = optuna.storages.get_storage(open_storage(location, write_ahead_log=True))
    except UsageError as exc:
        return fail(PROG, str(exc), exc=exc)
    pool = ThreadPoolExecutor(max_workers=args.threads)
    print(f"Serving {location.shown} on grpc://{args.host}:{args.port}; pass --storage "
          f"grpc://{args.host}:{args.port} to every tool. Ctrl-C stops it.", flush=True)
    try:
        with warnings.catch_warnings():  # "experimental" since Optuna 4.2: nothing to act on
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.run_grpc_proxy_server(storage, host=args.host, port=args.port,
                                                  thread_pool=pool)
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP
        print("Storage proxy stopped.", file=sys.stderr, flush=True)
        return exit_status(exc)
    except RuntimeError as exc:  # gRPC could not bind the address
        return fail(PROG, f"cannot listen on {args.host}:{args.port} ({exc}); pass another "
                    "--port or --host.", exc=exc)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
