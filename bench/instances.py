"""How much does batchyard add per instance, compared with starting the processes directly?

    python bench/instances.py [--count 1000] [--slots N] [--repeat 1]

Runs one task of InstanceCount COUNT with CommandLine `true` through the real `batchyard run`
command (a subprocess, fresh temporary data dir, `--slots N`), then the same COUNT
`bash -c true` processes with `xargs -P N`, and prints both wall times, the cost per instance
and the ratio (target: batchyard at most 1.5x xargs). N defaults to the CPU count. With
--repeat R each side runs R times and the fastest run counts. Exit status 1 if a run fails,
or (with --check) if the ratio misses the target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TARGET_RATIO = 1.5


@dataclass(frozen=True)
class Result:
    batchyard: float
    baseline: float
    startup: float
    count: int

    @property
    def ratio(self) -> float:
        return self.batchyard / self.baseline


def job_description(count: int) -> dict[str, object]:
    """One task, COUNT instances of `true`, logs into the default store's `bench` bucket."""
    task = {
        "InstanceCount": count,
        "AutoCluster": {"InstanceType": "ecs.sn1.medium"},
        "Parameters": {
            "Command": {"CommandLine": "true", "PackagePath": ""},
            "StdoutRedirectPath": "oss://bench/logs/",
            "StderrRedirectPath": "oss://bench/logs/",
        },
    }
    return {"Name": "bench-instances", "Priority": 0, "JobFailOnInstanceFail": True,
            "DAG": {"Tasks": {"noop": task}, "Dependencies": {}}}


def batchyard_command() -> list[str]:
    found = shutil.which("batchyard")
    return [found] if found else [sys.executable, "-m", "batchyard.cli"]


def time_batchyard(count: int, slots: int) -> float:
    """Wall time of `batchyard run` for a COUNT-instance job in a fresh data dir."""
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as folder:
        job = Path(folder) / "job.json"
        job.write_text(json.dumps(job_description(count)), encoding="utf-8")
        command = [*batchyard_command(), "run", str(job), "--quiet",
                   "--slots", str(slots), "--data-dir", str(Path(folder) / "data")]
        started = time.perf_counter()
        finished = subprocess.run(command, capture_output=True, text=True, check=False)
        took = time.perf_counter() - started
    if finished.returncode != 0:
        sys.exit(f"batchyard run exited {finished.returncode}:\n{finished.stdout}{finished.stderr}")
    return took


def time_xargs(count: int, slots: int) -> float:
    """Wall time of COUNT `bash -c true` processes, SLOTS at a time, started by xargs."""
    numbers = "".join(f"{n}\n" for n in range(count))
    started = time.perf_counter()
    subprocess.run(["xargs", "-P", str(slots), "-n", "1", "bash", "-c", "true"],
                   input=numbers, text=True, check=True)
    return time.perf_counter() - started


def measure(count: int, slots: int, repeat: int) -> Result:
    startup = min(time_batchyard(1, slots) for _ in range(repeat))
    ours = min(time_batchyard(count, slots) for _ in range(repeat))
    theirs = min(time_xargs(count, slots) for _ in range(repeat))
    return Result(ours, theirs, startup, count)


def report(result: Result, slots: int) -> str:
    count = result.count
    marginal = (result.batchyard - result.startup) / max(count - 1, 1)
    verdict = "meets" if result.ratio <= TARGET_RATIO else "misses"
    return "\n".join([
        f"{count} instances of `true`, {slots} at a time ({os.cpu_count()} CPUs)",
        f"  batchyard run : {result.batchyard:7.2f} s wall   "
        f"{result.batchyard / count * 1000:6.2f} ms per instance",
        f"  xargs -P {slots:<4} : {result.baseline:7.2f} s wall   "
        f"{result.baseline / count * 1000:6.2f} ms per instance",
        f"  batchyard with 1 instance (start-up, submit, shut-down): {result.startup:.2f} s; "
        f"each further instance {marginal * 1000:.2f} ms",
        f"  ratio batchyard / xargs: {result.ratio:.2f}x "
        f"({verdict} the target of {TARGET_RATIO}x)",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="instances (default 1000)")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1,
                        help="instances at once (default: CPU count)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side; fastest counts")
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 when the ratio is above {TARGET_RATIO}")
    arguments = parser.parse_args()
    if arguments.count < 1 or arguments.slots < 1 or arguments.repeat < 1:
        parser.error("--count, --slots and --repeat must be at least 1")
    result = measure(arguments.count, arguments.slots, arguments.repeat)
    print(report(result, arguments.slots))
    if arguments.check and result.ratio > TARGET_RATIO:
        sys.exit(1)


if __name__ == "__main__":
    main()
