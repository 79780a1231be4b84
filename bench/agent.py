"""How fast does the agent alone start, reap and conclude attempts, compared with xargs?

    python bench/agent.py [--count 2000] [--slots N] [--repeat 1] [--tracking subreaper]
                          [--popen]

Leases COUNT attempts with CommandLine `true` to a `LocalAgent` in this process — no
engine, no state store; a local object-store folder receives the two logs of each attempt
— as the engine would: SLOTS at first, then as many as each report frees. Then runs the
same COUNT `bash -c true` processes with `xargs -P SLOTS -n 1`, in the same invocation.
Prints both wall times, the ratio, and the agent's own CPU per instance: user + system of
this process (getrusage RUSAGE_SELF, which does not count the programs) over the leasing,
divided by COUNT — the share of issue 10's 0.25 ms budget the agent takes.

`--tracking subreaper` (the default) tracks detached processes as orphans of a child
subreaper; `--tracking cgroup` gives every slot a cgroup (what `batchyard run` does as root),
the program born inside it (`agent.births`). Both run the fast path (posix_spawn on the
spawner loop). `--popen` starts fast-path
programs with `subprocess.Popen(cwd=…)` instead of posix_spawn in the loop's own working
directory (the fallback where `unshare(CLONE_FS)` is refused).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.agent import spawner
from batchyard.agent.agent import LocalAgent
from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.ports.agents import AgentInfo, Report, batch_of
from batchyard.runner.confinement import Confinement, Tracking
from batchyard.runner.settings import RunnerSettings

JOB = "job-00000000000000000000000000bench"


class Feeder:
    """The engine's part: lease as many attempts as reports free slots, until COUNT."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.leased = 0
        self.done_count = 0
        self.calls = 0
        self.failed: list[Report] = []
        self.done = threading.Event()
        self.agent: LocalAgent | None = None

    def lease(self, how_many: int) -> None:
        first, self.leased = self.leased, min(self.count, self.leased + how_many)
        if first < self.leased:
            assert self.agent is not None
            self.agent.lease(batch_of([(n, request(n, self.count))
                                       for n in range(first, self.leased)]))

    def reported(self, agent_id: str, reports: Sequence[Report]) -> None:
        self.calls += 1
        self.done_count += len(reports)
        self.failed += [report for report in reports if not report.outcome.succeeded]
        self.lease(len(reports))
        if self.done_count >= self.count:
            self.done.set()

    def heartbeat(self, agent_id: str, running: Sequence[int]) -> None:
        pass

    def gone(self, agent_id: str, reason: str) -> None:
        pass


def request(instance: int, count: int) -> AttemptRequest:
    return AttemptRequest(AttemptKey(JOB, "bench", instance, 1), count, "true", "", {}, 0,
                          "oss://bench/logs/", "oss://bench/logs/")


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_agent(count: int, slots: int, tracking: Tracking, folder: Path) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds for COUNT attempts through the agent."""
    objects = FsspecObjectStore(folder / "objects")
    settings = RunnerSettings(work_root=folder / "work",
                              confinement=Confinement(tracking=tracking))
    feeder = Feeder(count)
    agent = feeder.agent = LocalAgent(AgentInfo("bench", slots), objects, settings,
                                      feeder).start()
    try:
        cpu, wall = cpu_self(), time.perf_counter()
        feeder.lease(slots)
        feeder.done.wait()
        wall, cpu = time.perf_counter() - wall, cpu_self() - cpu
    finally:
        agent.shutdown()
    if feeder.failed:
        sys.exit(f"{len(feeder.failed)} attempts failed, the first: {feeder.failed[0]}")
    print(f"  ({feeder.calls} report calls for {count} attempts)")
    return wall, cpu


def time_xargs(count: int, slots: int) -> float:
    numbers = "".join(f"{n}\n" for n in range(count))
    wall = time.perf_counter()
    subprocess.run(["xargs", "-P", str(slots), "-n", "1", "bash", "-c", "true"],
                   input=numbers.encode(), check=True)
    return time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--tracking", choices=["subreaper", "cgroup"], default="subreaper")
    parser.add_argument("--popen", action="store_true")
    arguments = parser.parse_args()
    if arguments.popen:
        spawner._own_working_directory = lambda: False
    runs = []
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as name:
        for run in range(arguments.repeat):
            folder = Path(name) / str(run)
            runs.append((*time_agent(arguments.count, arguments.slots, arguments.tracking,
                                     folder), time_xargs(arguments.count, arguments.slots)))
    wall, cpu, xargs = min(runs)
    count = arguments.count
    print(f"agent   {wall:7.3f} s  {1000 * wall / count:.3f} ms/instance  "
          f"({arguments.tracking}{', popen' if arguments.popen else ''})")
    print(f"xargs   {xargs:7.3f} s  {1000 * xargs / count:.3f} ms/instance  "
          f"(-P {arguments.slots})")
    print(f"ratio   {wall / xargs:.2f}x")
    print(f"agent Python CPU per instance: {1000 * cpu / count:.3f} ms")
    print(f"load average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
