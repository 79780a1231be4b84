"""A throwaway PostgreSQL cluster for tests: Debian's `initdb`/`pg_ctl`, a temp data folder,
127.0.0.1 and a free port, fsync off; one database per test, all gone at session end.

`initdb` refuses to run as root, so as root the cluster belongs to the `postgres` user (created
when missing) and its programs run through `runuser`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "install PostgreSQL's server programs: apt-get install -y postgresql"
OWNER = "postgres"
SERVER_OPTIONS = ("-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                  "-c listen_addresses=127.0.0.1 -c max_connections=200")


class PostgresMissing(RuntimeError):
    """No `initdb` on this machine."""


def find_bindir() -> Path:
    """The folder holding `initdb` and `pg_ctl` (PATH first, then Debian's versioned folders)."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                      key=lambda path: int(Path(path).parent.name.split(".")[0]), reverse=True)
    candidates += [Path(path) for path in versions]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise PostgresMissing(f"PostgreSQL is not installed (no initdb/pg_ctl found): {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PostgresCluster:
    bindir: Path
    folder: Path
    port: int = 0

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{OWNER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresCluster:
        self._run("initdb", "-D", str(self.data), "-U", OWNER, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync", "--no-instructions")
        self.port = free_port()
        options = f"{SERVER_OPTIONS} -p {self.port} -k {self.folder}"
        self._run("pg_ctl", "start", "-w", "-t", "30", "-D", str(self.data),
                  "-l", str(self.folder / "server.log"), "-o", options)
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))
        shutil.rmtree(self.folder, ignore_errors=True)

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _run(self, program: str, *arguments: str) -> None:
        command = [str(self.bindir / program), *arguments]
        if os.geteuid() == 0:
            command = ["runuser", "-u", OWNER, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                check=False)
        if result.returncode != 0:
            log = self.folder / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{program} failed ({result.returncode}): "
                               f"{result.stdout}{result.stderr}{tail}")


def ensure_owner() -> None:
    """As root: make sure the `postgres` user exists (initdb will not run as root)."""
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(OWNER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/false",
                        OWNER], check=True)


def start_cluster() -> PostgresCluster:
    """A running throwaway cluster; raises PostgresMissing when PostgreSQL is not installed."""
    bindir = find_bindir()
    ensure_owner()
    folder = Path(tempfile.mkdtemp(prefix="batchyard-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam(OWNER)
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    cluster = PostgresCluster(bindir, folder)
    try:
        return cluster.start()
    except BaseException:
        cluster.stop()
        raise
