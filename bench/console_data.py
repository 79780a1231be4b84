"""Fill a data directory for the console benchmark, fast, without running anything.

    python bench/console_data.py DATA_DIR [--jobs 10000] [--instances 100000] [--tenant bench]

Writes through the state store's own operations (`batchyard.ports.store`: `create_jobs`,
`move_job`, `move_task`, `mark_running`, `end_attempts`, `record_attempts`, in batches), so
the rows, the per-state counts kept in the job and task rows, the attempts and the events are
what an engine would have left — only no program runs:

- `jobs` one-task, one-instance jobs of `tenant`, created a minute apart (the newest now),
  named `etl-0` … `etl-49`, `report-…` and `train-…` in turn, in mixed states (`JOB_MIX`:
  Finished, Failed, Stopped, Running, Waiting);
- one Running job `big` of three tasks, `prepare` (1 instance, Finished) → `work`
  (`instances` instances) → `report` (1 instance, Waiting): of `work`'s instances, the first
  ones Finished with every 20th Failed, then some Running, the rest Waiting (`INSTANCE_MIX`),
  as instances launched in id order leave them.

It also makes an access key of `tenant` and prints it (`--json`: as JSON) with the big job's id.

The data is a snapshot: a server later started on the directory takes its Running instances
as lost with the previous server (re-queued: Waiting) and runs the Waiting ones (`true`). Time
pages right after start-up, or read through `SqlReads` directly, for steady figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

from batchyard.adapters.credentials import AccessKey
from batchyard.adapters.store import SqlStore
from batchyard.cli.keys import open_key_store
from batchyard.domain.attempt import AttemptKey
from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.domain.scheduling import Candidate
from batchyard.domain.spec import JobDescription, parse_job
from batchyard.domain.states import State
from batchyard.ids import new_job_id
from batchyard.ports.store import AttemptEnd, LaunchRow, NewJob, StateStore, StateTransaction
from batchyard.settings import Settings

JOB_MIX: dict[State, int] = {State.FINISHED: 12, State.FAILED: 2, State.STOPPED: 1,
                             State.RUNNING: 1, State.WAITING: 4}
"""Of every 20 small jobs, how many end up in each state (dealt out in turn)."""
INSTANCE_MIX = (0.60, 0.03)
"""Of the big task's instances: the share that ended (every 20th of those Failed, the rest
Finished), then the share Running; the others wait."""
FAILED_EVERY = 20
BATCH = 2_000
"""Jobs per transaction, instances per statement batch."""
NAMES = ("etl", "report", "train")
BIG_TASKS = ("prepare", "work", "report")
BIG_TASK = "work"
SPACING = 60.0
"""Seconds between two small jobs' creation."""
LOGS = "oss://bench/logs/"


@dataclass(frozen=True)
class Seeded:
    """What `seed` wrote: the tenant, its key, the jobs' ids and the big job's."""

    tenant: str
    key: AccessKey
    job_ids: list[str]
    """The small jobs, oldest first."""
    big_job_id: str
    big_task: str
    seconds: float


def task(count: int = 1) -> dict[str, Any]:
    return {"InstanceCount": count, "MaxRetryCount": 0, "Timeout": 600,
            "AutoCluster": {"InstanceType": "ecs.sn1.medium"},
            "Parameters": {"Command": {"CommandLine": "true", "PackagePath": ""},
                           "StdoutRedirectPath": LOGS, "StderrRedirectPath": LOGS}}


def small_job() -> JobDescription:
    return parse_job({"Name": "etl-0", "Priority": 0, "Type": "DAG",
                      "Description": "a small job of the console benchmark",
                      "JobFailOnInstanceFail": True,
                      "DAG": {"Tasks": {"work": task()}, "Dependencies": {}}})


def big_job(instances: int) -> JobDescription:
    return parse_job({
        "Name": "big", "Priority": 1, "Type": "DAG", "JobFailOnInstanceFail": False,
        "Description": f"one task of {instances} instances in mixed states",
        "DAG": {"Tasks": {"prepare": task(), "work": task(instances), "report": task()},
                "Dependencies": {"prepare": ["work"], "work": ["report"]}}})


def job_states(count: int) -> list[State]:
    """The state of each of `count` small jobs, dealt out from `JOB_MIX` in turn."""
    cycle = [state for state, share in JOB_MIX.items() for _ in range(share)]
    spread = [cycle[(index * 7) % len(cycle)] for index in range(len(cycle))]
    return [spread[index % len(spread)] for index in range(count)]


def instance_states(count: int) -> list[State]:
    """The state of each instance of the big task, by instance id."""
    ended = int(count * INSTANCE_MIX[0])
    running = int(count * INSTANCE_MIX[1])
    return [(State.FAILED if index % FAILED_EVERY == FAILED_EVERY - 1 else State.FINISHED)
            if index < ended else State.RUNNING if index < ended + running else State.WAITING
            for index in range(count)]


def batches(items: Sequence[Any], size: int = BATCH) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _launch(tx: StateTransaction, job_id: str, tenant: str, created: float, task_name: str,
            instance_ids: Sequence[int], now: float) -> None:
    rows = [LaunchRow(Candidate(job_id, 0, _at(created), task_name, index, tenant), 0, 0)
            for index in instance_ids]
    for batch in batches(rows):
        assert tx.mark_running(batch, now)


def _end(tx: StateTransaction, job_id: str, task_name: str,
         ends: Sequence[tuple[int, State]], started: float, now: float) -> None:
    """End the first attempt of each (instance, Finished|Failed), recorded as an attempt."""
    done: list[AttemptEnd] = []
    for index, target in ends:
        failed = target is State.FAILED
        outcome = Outcome(1 if failed else 0, ErrorCode.EXIT_CODE if failed else ErrorCode.NONE,
                          "exit code 1" if failed else "", started_at=_at(started),
                          ended_at=_at(now), worker="i-bench")
        done.append(AttemptEnd(AttemptKey(job_id, task_name, index, 1), outcome, 0, now,
                               target=target))
    for batch in batches(done):
        assert all(tx.end_attempts(batch, now))
        tx.record_attempts([(end.key, end.outcome) for end in batch])


def _settle_small(tx: StateTransaction, new: NewJob, state: State) -> None:
    """Move a fresh one-instance job (and its task and instance) to `state`."""
    job_id, now = new.job_id, new.now + 1
    if state is State.WAITING:
        return
    if state is State.STOPPED:
        tx.move_instances(job_id, State.STOPPED, now, ended=now)
        tx.move_task(job_id, "work", State.STOPPED, now, ended=now)
        tx.move_job(job_id, State.STOPPED, now, ended=now, message="stopped by the user")
        return
    tx.move_job(job_id, State.RUNNING, now, started=now)
    tx.move_task(job_id, "work", State.RUNNING, now, started=now)
    _launch(tx, job_id, new.tenant, new.now, "work", [0], now)
    if state is State.RUNNING:
        return
    _end(tx, job_id, "work", [(0, state)], now, now + 2)
    message = "task work failed: instance 0 exit code 1" if state is State.FAILED else ""
    tx.move_task(job_id, "work", state, now + 2, ended=now + 2)
    tx.move_job(job_id, state, now + 2, ended=now + 2, message=message)


def seed_small_jobs(store: StateStore, tenant: str, count: int, newest: float) -> list[str]:
    """`count` one-instance jobs of `tenant`, the newest created at `newest`; their ids."""
    spec = small_job()
    specs = [spec.model_copy(update={"Name": f"{NAMES[index % len(NAMES)]}-{index % 50}"})
             for index in range(len(NAMES) * 50)]
    new_jobs = [NewJob(new_job_id(), tenant, specs[index % len(specs)],
                       newest - (count - 1 - index) * SPACING) for index in range(count)]
    states = job_states(count)
    for batch in batches(list(zip(new_jobs, states, strict=True))):
        with store.transaction() as tx:
            tx.create_jobs([new for new, _ in batch])
            for new, state in batch:
                _settle_small(tx, new, state)
    return [new.job_id for new in new_jobs]


def seed_big_job(store: StateStore, tenant: str, instances: int, created: float) -> str:
    """The Running three-task job whose middle task has `instances` instances; its id."""
    job_id = new_job_id()
    states = instance_states(instances)
    start = created + 1
    with store.transaction() as tx:
        tx.create_jobs([NewJob(job_id, tenant, big_job(instances), created)])
        tx.move_job(job_id, State.RUNNING, start, started=start)
        tx.move_task(job_id, "prepare", State.RUNNING, start, started=start)
        _launch(tx, job_id, tenant, created, "prepare", [0], start)
        _end(tx, job_id, "prepare", [(0, State.FINISHED)], start, start + 5)
        tx.move_task(job_id, "prepare", State.FINISHED, start + 5, ended=start + 5)
        tx.set_ready(job_id, [BIG_TASK], True)
        tx.move_task(job_id, BIG_TASK, State.RUNNING, start + 5, started=start + 5)
        launched = [index for index, state in enumerate(states) if state is not State.WAITING]
        _launch(tx, job_id, tenant, created, BIG_TASK, launched, start + 5)
        ended = [(index, state) for index, state in enumerate(states)
                 if state in (State.FINISHED, State.FAILED)]
        _end(tx, job_id, BIG_TASK, ended, start + 5, start + 65)
    return job_id


def seed(data_dir: Path, jobs: int = 10_000, instances: int = 100_000,
         tenant: str = "bench", database_url: str = "") -> Seeded:
    """Fill `data_dir` (its SQLite database, or the one at `database_url`, else
    `BATCHYARD_DATABASE_URL`'s) with `jobs` small jobs of `tenant` and one big job of
    `instances` instances (module docstring), and make an access key of `tenant`. Nothing
    runs; takes seconds (10,000 jobs and 100,000 instances: ~8 s on SQLite)."""
    began = time.perf_counter()
    settings = Settings(data_dir=data_dir)
    if database_url:
        settings = settings.model_copy(update={"database_url": database_url})
    store = SqlStore(settings.resolved_database_url)
    try:
        newest = time.time()
        job_ids = seed_small_jobs(store, tenant, jobs, newest - SPACING)
        big = seed_big_job(store, tenant, instances, newest)
    finally:
        store.close()
    key = open_key_store(settings).create(tenant, "console benchmark")
    return Seeded(tenant, key, job_ids, big, BIG_TASK, time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="the data directory to fill (new or empty)")
    parser.add_argument("--jobs", type=int, default=10_000, help="small jobs (10000)")
    parser.add_argument("--instances", type=int, default=100_000,
                        help="instances of the big job's middle task (100000)")
    parser.add_argument("--tenant", default="bench", help="their tenant (bench)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    arguments = parser.parse_args()
    if arguments.jobs < 0 or arguments.instances < 1:
        sys.exit("--jobs must be at least 0 and --instances at least 1")
    seeded = seed(arguments.data_dir, arguments.jobs, arguments.instances, arguments.tenant)
    result = {"data_dir": str(arguments.data_dir.resolve()), "tenant": seeded.tenant,
              "key_id": seeded.key.id, "key_secret": seeded.key.secret,
              "jobs": len(seeded.job_ids), "big_job": seeded.big_job_id,
              "big_task": seeded.big_task, "instances": arguments.instances,
              "seconds": round(seeded.seconds, 2)}
    if arguments.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['jobs']} jobs and job {result['big_job']} ({arguments.instances} instances "
          f"in task {BIG_TASK}) of tenant {seeded.tenant} in {result['data_dir']}, "
          f"{seeded.seconds:.1f} s")
    print(f"export BATCHYARD_KEY_ID={seeded.key.id} BATCHYARD_KEY_SECRET={seeded.key.secret}")


if __name__ == "__main__":
    main()
