"""A throwaway PostgreSQL server that a test starts, restarts and stops itself.

Debian's ``postgresql`` package ships initdb and pg_ctl under /usr/lib/postgresql/<version>/bin;
the server refuses to run as root, so as root it runs as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest


def binaries() -> Path | None:
    """The folder holding initdb and pg_ctl, or None where PostgreSQL is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running(folder: Path, password: str | None = None) -> Iterator[Server]:
    """A server of a test's own in ``folder``, stopped afterwards whatever happened.

    Skips the test where PostgreSQL's initdb and pg_ctl are not installed.
    """
    bin_dir = binaries()
    if bin_dir is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed (Debian: apt-get install "
                    "postgresql); this test starts a server of its own")
    server = Server(folder, bin_dir, password=password)
    server.init()
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
            server.stop()


class Server:
    """A PostgreSQL server in ``folder`` on a free port of 127.0.0.1.

    Trust authentication, or with ``password`` given, SCRAM password authentication for the
    user ``postgres`` (the shared test server trusts everyone: it cannot refuse a password).
    """

    def __init__(self, folder: Path, bin_dir: Path, password: str | None = None) -> None:
        self.folder = folder
        self.password = password
        self.data = folder / "pgdata"
        self.bin = bin_dir
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:  # postgres will not run as root
            self.user = "postgres"
            pwd.getpwnam(self.user)  # KeyError where there is no such user
            shutil.chown(folder, self.user)
            folder.chmod(0o755)
            for parent in folder.parents:  # the server user must reach its folder
                if parent == Path("/"):
                    break
                parent.chmod(parent.stat().st_mode | 0o011)

    @property
    def url(self) -> str:
        """The server's URL, without a password (PGPASSWORD or ~/.pgpass may supply it)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def url_with(self, password: str) -> str:
        """The server's URL with ``password`` in it (percent-encoded as a URL needs)."""
        secret = quote(password, safe="")
        return f"postgresql+psycopg://postgres:{secret}@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        argv = [str(self.bin / command[0]), *command[1:]]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
        if done.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else "(no server log)"
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stdout}"
                               f"{done.stderr}\nserver log:\n{tail}")

    def init(self) -> None:
        if self.password is None:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E",
                      "UTF8")
            return
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            shutil.chown(pwfile, self.user)
        pwfile.chmod(0o600)
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres",
                      "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8")
        finally:
            pwfile.unlink()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l",
                  str(self.folder / "server.log"), "-w", "-t", "120", "start")

    def stop(self) -> None:
        """Stop the server at once, as a crash or fail-over would: connections are cut."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "120", "stop")
