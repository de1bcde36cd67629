"""A throwaway PostgreSQL cluster on 127.0.0.1 for one test session.

initdb refuses to run as root, so when the tests run as root (as CI does) the
cluster is created and started as the ``postgres`` system user that Debian's
PostgreSQL packages create, or as ``nobody`` where that user is missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg

from tests.support.prometheus import free_port

SUPERUSER = "behavemail"


class PostgresCluster:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="behavemail-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self._owner = _unprivileged_user() if os.geteuid() == 0 else None
        self._databases = 0

    def _run(self, *args: str) -> None:
        command = [_binary(args[0]), *args[1:]]
        if self._owner:
            command = ["runuser", "-u", self._owner, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            log = (self.directory / "postgres.log")
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {result.stderr.strip()}\n{tail}")

    def start(self) -> "PostgresCluster":
        if self._owner:
            account = pwd.getpwnam(self._owner)
            os.chown(self.directory, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", SUPERUSER, "-E", "UTF8", "--no-sync")
        options = f"-k {self.directory} -c listen_addresses=127.0.0.1 -p {self.port} -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-w", "-t", "60",
                  "-l", str(self.directory / "postgres.log"), "start")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def new_database(self) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        self._databases += 1
        name = f"test_{self._databases}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres",
                             autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{name}"


def _unprivileged_user() -> str:
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("initdb cannot run as root, and neither a postgres nor a nobody user exists")


def _binary(name: str) -> str:
    """Find a PostgreSQL program on PATH, or in Debian's versioned folder."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not candidates:
        raise RuntimeError(f"{name} not found: install PostgreSQL's server binaries (Debian: postgresql)")
    return str(candidates[-1])
