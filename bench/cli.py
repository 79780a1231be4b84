"""How long the inspection commands take on a local data directory, against the floor.

    python bench/cli.py [--jobs 500] [--repeat 5]

Fills a fresh data directory with JOBS finished jobs (one task of 3 instances each, written
straight into its SQLite database, so the setup takes seconds), then times whole processes,
the fastest of REPEAT runs each:

- the floor: `python -c pass` (the interpreter's start) and a Python one-liner that opens
  the same database with `sqlite3` and prints the newest 20 jobs (what `jobs` must at least
  do);
- `batchyard --version`, `batchyard jobs` (the table, piped), `batchyard jobs -q --all`,
  `batchyard jobs --json`, `batchyard job JOB_ID` and `batchyard job PREFIX` (a unique start
  of the id, looked up as git does).

Prints each in milliseconds and its ratio to the sqlite one-liner. Nothing outside the
temporary directory is touched; no server is needed (no endpoint is configured).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from instances import batchyard_command, timed

SQLITE_LISTING = (
    "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
    "print('\\n'.join(' '.join(map(str, row)) for row in c.execute("
    "'select id, name, state, priority, created from jobs order by created desc limit 20')))")


def fill(data_dir: Path, count: int) -> list[str]:
    """COUNT Finished jobs in the data dir's database; their ids, oldest first."""
    from batchyard.adapters.store import NewJob, SqlStore
    from batchyard.domain.spec import parse_job
    from batchyard.ids import new_job_id

    data_dir.mkdir(parents=True)
    store = SqlStore(f"sqlite:///{data_dir / 'batchyard.db'}")
    spec = parse_job({"Name": "bench", "DAG": {"Tasks": {"work": {
        "InstanceCount": 3, "AutoCluster": {"InstanceType": "ecs.sn1.medium"},
        "Parameters": {"Command": {"CommandLine": "true"},
                                           "StdoutRedirectPath": "oss://bench/logs/",
                                           "StderrRedirectPath": "oss://bench/logs/"}}}}})
    ids = []
    for number in range(count):
        job_id = new_job_id()
        store.create_job(NewJob(job_id, "default", spec, time.time() + number * 1e-3))
        ids.append(job_id)
    with store.engine.begin() as connection:
        from sqlalchemy import text

        for table in ("jobs", "tasks", "instances"):
            connection.execute(text(f"update {table} set state = 'Finished'"))
    store.close()
    return ids


def measure(count: int, repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as name:
        data = Path(name) / "data"
        ids = fill(data, count)
        environment = {key: value for key, value in os.environ.items()
                       if not key.startswith("BATCHYARD_")}
        environment["BATCHYARD_DATA_DIR"] = str(data)
        environment["BATCHYARD_CLIENT_CONFIG"] = str(Path(name) / "none.toml")
        os.environ.clear()
        os.environ.update(environment)
        batchyard = batchyard_command()
        newest = ids[-1]
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "sqlite3 one-liner (floor)": [sys.executable, "-c", SQLITE_LISTING,
                                          str(data / "batchyard.db")],
            "batchyard --version": [*batchyard, "--version"],
            "batchyard jobs": [*batchyard, "jobs"],
            "batchyard jobs -q --all": [*batchyard, "jobs", "-q", "--all"],
            "batchyard jobs --json": [*batchyard, "jobs", "--json"],
            "batchyard job JOB_ID": [*batchyard, "job", newest],
            "batchyard job PREFIX": [*batchyard, "job", newest[4:22]],
        }
        best: dict[str, float] = {}
        for _ in range(repeat):
            for label, command in commands.items():
                timing, failure = timed(command)
                if failure:
                    sys.exit(failure)
                best[label] = min(best.get(label, timing.wall), timing.wall)
        return best


def report(best: dict[str, float], count: int) -> str:
    floor = best["sqlite3 one-liner (floor)"]
    lines = [f"{count} jobs in a local data dir (SQLite); fastest of the runs, whole processes"]
    for label, wall in best.items():
        lines.append(f"  {label:<28} {wall * 1000:7.0f} ms   {wall / floor:5.2f}× the floor")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs in the data dir")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command")
    arguments = parser.parse_args()
    print(report(measure(arguments.jobs, arguments.repeat), arguments.jobs))


if __name__ == "__main__":
    main()
