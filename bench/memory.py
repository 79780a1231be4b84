"""Does a long-running engine grow per finished job?

    python bench/memory.py [--jobs 10000] [--every 1000] [--slots N] [--window 32]

Runs JOBS small jobs (one task, one instance of `true`; every other job AutoRelease, so both
kinds of ending are covered) through an in-process engine opened as `batchyard serve` opens
it (fresh temporary data dir, SQLite), a WINDOW of jobs submitted at a time. After every
EVERY finished jobs it samples the process's resident set size (after a garbage collection)
and the sizes of the engine's per-job tables. It prints the RSS curve and the growth per
1,000 jobs, measured against the baseline of the same invocation: the RSS after the first
EVERY jobs (start-up, imports, SQLite's page cache and the allocator's arenas are warm by
then, so what is added afterwards is what the engine keeps per job).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from batchyard.errors import NotFound
from batchyard.orchestrator.engine import Engine
from batchyard.service import open_engine
from batchyard.settings import Settings

TABLES = ("_specs", "_tenants", "_released", "_running_tasks", "_in_flight", "_tries")
"""Engine attributes whose sizes are printed by engines without `table_sizes` (before
2026-12-02), so that the same bench measures the code before and after."""


def job_description(number: int) -> dict[str, Any]:
    task = {
        "InstanceCount": 1,
        "AutoCluster": {"InstanceType": "ecs.sn1.medium"},
        "Parameters": {
            "Command": {"CommandLine": "true", "PackagePath": ""},
            "StdoutRedirectPath": "oss://bench/logs/",
            "StderrRedirectPath": "oss://bench/logs/",
        },
    }
    return {"Name": f"bench-memory-{number}", "Priority": 0, "JobFailOnInstanceFail": True,
            "AutoRelease": number % 2 == 1,
            "DAG": {"Tasks": {"noop": task}, "Dependencies": {}}}


def rss_mb() -> float:
    """Resident set size of this process, MB (VmRSS from /proc)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def table_sizes(engine: Engine) -> str:
    sizes = engine.table_sizes() if hasattr(engine, "table_sizes") else {
        name.lstrip("_"): len(getattr(engine, name)) for name in TABLES if hasattr(engine, name)}
    return " ".join(f"{name}={size}" for name, size in sizes.items())


def run_batch(engine: Engine, first: int, count: int) -> None:
    ids = [engine.submit(job_description(number)) for number in range(first, first + count)]
    for job_id in ids:
        state = final_state(engine, job_id)
        if state != "Finished":
            sys.exit(f"job {job_id} ended {state}")


def final_state(engine: Engine, job_id: str) -> str:
    """The job's state once it ended. Asked twice: before 2026-12-02 `wait` could raise
    NotFound for an AutoRelease job released between its two reads."""
    try:
        return engine.wait(job_id, timeout=120).state.value
    except NotFound:
        return engine.wait(job_id, timeout=120).state.value


def sample(engine: Engine, done: int, started: float) -> float:
    gc.collect()
    rss = rss_mb()
    print(f"  {done:6d} jobs  {time.perf_counter() - started:6.1f} s  RSS {rss:7.1f} MB  "
          f"{table_sizes(engine)}", flush=True)
    return rss


def measure(jobs: int, every: int, slots: int, window: int) -> list[tuple[int, float]]:
    curve = []
    with tempfile.TemporaryDirectory(prefix="batchyard-memory-") as name:
        settings = Settings(data_dir=Path(name) / "data", slots=slots)
        with open_engine(settings, serving=True) as engine:
            curve.append((0, sample(engine, 0, time.perf_counter())))
            started = time.perf_counter()
            done = 0
            while done < jobs:
                count = min(window, jobs - done, every - done % every)
                run_batch(engine, done, count)
                done += count
                if done % every == 0 or done == jobs:
                    curve.append((done, sample(engine, done, started)))
    return curve


def report(curve: list[tuple[int, float]]) -> str:
    """Growth after the first sample past zero (the baseline) to the last, per 1,000 jobs."""
    (base_jobs, base_rss), (last_jobs, last_rss) = curve[1], curve[-1]
    if last_jobs == base_jobs:
        return "too few samples for a growth figure (raise --jobs or lower --every)"
    per_thousand = (last_rss - base_rss) / (last_jobs - base_jobs) * 1000
    middle_jobs, middle_rss = curve[(len(curve) + 1) // 2]
    later = (last_rss - middle_rss) / max(last_jobs - middle_jobs, 1) * 1000
    return "\n".join([
        f"baseline: RSS after {base_jobs} jobs {base_rss:.1f} MB; after {last_jobs} jobs "
        f"{last_rss:.1f} MB ({last_rss / base_rss:.3f}x the baseline)",
        f"growth: {per_thousand:.2f} MB per 1,000 jobs ({per_thousand:.2f} KB per job); "
        f"second half (from {middle_jobs} jobs): {later:.2f} MB per 1,000 jobs",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs to run (default 10000)")
    parser.add_argument("--every", type=int, default=1000, help="jobs between samples")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1,
                        help="instances at once (default: CPU count)")
    parser.add_argument("--window", type=int, default=32, help="jobs submitted at a time")
    arguments = parser.parse_args()
    if min(arguments.jobs, arguments.every, arguments.slots, arguments.window) < 1:
        parser.error("--jobs, --every, --slots and --window must be at least 1")
    print(f"{arguments.jobs} jobs of one `true` instance, {arguments.slots} slots, "
          f"{arguments.window} submitted at a time; RSS after a gc.collect():")
    print(report(measure(arguments.jobs, arguments.every, arguments.slots, arguments.window)))


if __name__ == "__main__":
    main()
