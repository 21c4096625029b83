"""Optuna's gRPC storage proxy as a study storage: ``grpc://HOST:PORT``.

One proxy process holds the database connections; every worker talks to it over gRPC instead
of opening its own, so hundreds of workers do not overwhelm the database (Optuna's
``run_grpc_proxy_server`` and ``GrpcStorageProxy``). ``python -m tuning.proxy`` starts one.
gRPC is an optional extra (``PROXY_EXTRA``): the default SQLite storage does not need it.
"""

from __future__ import annotations

import urllib.parse
import warnings

import optuna

from tuning.study.errors import StudyError
from tuning.study.secrets import masked

PROXY_SCHEME = "grpc://"  # a --storage starting so is Optuna's gRPC storage proxy
PROXY_WAIT_S = 10  # how long a tool waits for a storage proxy to answer before it gives up
PROXY_EXTRA = "pip install -e '.[grpc]'"  # what installs gRPC, the proxy's client and server


def proxy_address(url: str) -> tuple[str, int]:
    """The host and port of a ``grpc://HOST:PORT`` storage proxy URL.

    Raises:
        StudyError: no host, or no port from 1 to 65535.
    """
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        port = None
    if not parts.hostname or not port or parts.path not in ("", "/"):
        raise StudyError(f"--storage {masked(url)!r} is not a storage proxy address; write "
                         "grpc://HOST:PORT, e.g. grpc://127.0.0.1:13000.")
    return parts.hostname, port


def require_grpc(what: str) -> None:
    """Raise StudyError saying how to install gRPC where it is missing."""
    try:
        import grpc  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        raise StudyError(f"{what} needs gRPC, which is not installed: {PROXY_EXTRA}.") from None


def open_proxy(url: str) -> optuna.storages.BaseStorage:
    """A client of the storage proxy at ``url``, once it answers.

    Raises:
        StudyError: gRPC is not installed, or no proxy answers within PROXY_WAIT_S.
    """
    host, port = proxy_address(url)
    require_grpc(f"--storage {masked(url)}")
    with warnings.catch_warnings():  # "experimental" since Optuna 4.2: nothing to act on
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        proxy = optuna.storages.GrpcStorageProxy(host=host, port=port)
    try:
        proxy.wait_server_ready(timeout=PROXY_WAIT_S)
    except ConnectionError:
        proxy.close()
        raise StudyError(
            f"no storage proxy answered at {masked(url)} within {PROXY_WAIT_S} s; start one "
            f"with python -m tuning.proxy --storage URL --port {port} (docs/scale-out.md), or "
            "check the address."
        ) from None
    return proxy
