"""Does an outcome cost more in a job of many tasks?

    python bench/wide.py [--tasks 500 2000] [--slots N]

For each N: one job of N tasks with one instance of `true` each (no dependencies), then,
as the baseline of the same invocation, one job of one task with N instances of `true`,
both through an in-process engine (fresh temporary data dir, SQLite). Prints instances/s
of each and the ratio. The two jobs start the same processes; what differs is the work the
engine does per outcome, which must not grow with the number of tasks of the job.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from batchyard.service import open_engine
from batchyard.settings import Settings


def task(count: int) -> dict[str, Any]:
    return {"InstanceCount": count, "AutoCluster": {"InstanceType": "ecs.sn1.medium"},
            "Parameters": {"Command": {"CommandLine": "true", "PackagePath": ""},
                           "StdoutRedirectPath": "oss://bench/logs/",
                           "StderrRedirectPath": "oss://bench/logs/"}}


def job(tasks: dict[str, Any]) -> dict[str, Any]:
    return {"Name": "bench-wide", "Priority": 0, "JobFailOnInstanceFail": True,
            "DAG": {"Tasks": tasks, "Dependencies": {}}}


def instances_per_second(description: dict[str, Any], count: int, slots: int) -> float:
    with tempfile.TemporaryDirectory(prefix="batchyard-wide-") as name:
        settings = Settings(data_dir=Path(name) / "data", slots=slots)
        with open_engine(settings) as engine:
            started = time.perf_counter()
            job_id = engine.submit(description)
            state = engine.wait(job_id).state.value
            elapsed = time.perf_counter() - started
    if state != "Finished":
        sys.exit(f"the job ended {state}")
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1)
    arguments = parser.parse_args()
    for count in arguments.tasks:
        wide = instances_per_second(job({f"t{n}": task(1) for n in range(count)}), count,
                                    arguments.slots)
        deep = instances_per_second(job({"t": task(count)}), count, arguments.slots)
        print(f"N={count:5d}: {count} tasks x 1 instance {wide:7.1f} instances/s; "
              f"1 task x {count} instances {deep:7.1f} instances/s; "
              f"ratio {deep / wide:.2f}x", flush=True)


if __name__ == "__main__":
    main()
