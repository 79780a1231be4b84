"""How fast does the agent alone start, reap and conclude attempts, compared with xargs?

    python bench/agent.py [--count 2000] [--slots N] [--repeat 1] [--tracking subreaper]
                          [--spawn native|os|popen]

Leases COUNT attempts with CommandLine `true` to a `LocalAgent` in this process — no
engine, no state store; a local object-store folder receives the two logs of each attempt
— as the engine would: SLOTS at first, then as many as each report frees. Then runs the
same COUNT `bash -c true` processes with `xargs -P SLOTS -n 1`, in the same invocation.
Prints both wall times, the ratio, and the agent's own CPU per instance: user + system of
this process (getrusage RUSAGE_SELF, which does not count the programs: their CPU, reaped,
is RUSAGE_CHILDREN, printed apart) over the leasing, divided by COUNT — the share of issue
10's 0.25 ms budget the agent takes. Each figure is the best of the REPEAT runs.

It also times every spawn on the loop thread: the whole `Spawner._spawn` (wall), and the
foreign `posix_spawn` call within it, during which the GIL is free (`--spawn native`);
the rest is the time the spawner holds the GIL per spawn. With `--spawn os`
(`os.posix_spawn`, which holds the GIL until the child has exec'd) the whole spawn holds it.

`--tracking subreaper` (the default) tracks detached processes as orphans of a child
subreaper; `--tracking cgroup` gives every slot a cgroup (what `batchyard run` does as root),
the program born inside it (`agent.births`). Both run the fast path (posix_spawn on the
spawner loop). `--spawn` picks how the loop starts programs: `native` (the default: the C
library's posix_spawn through ctypes, `agent.native`), `os` (`os.posix_spawn` in the loop's
own working directory: the fallback without `posix_spawn_file_actions_addchdir_np`) or
`popen` (`subprocess.Popen(cwd=…)`: the fallback where `unshare(CLONE_FS)` is refused too).
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

try:
    from batchyard.agent import native
except ImportError:  # a checkout from before the native spawn: it compares the same way
    native = None  # type: ignore[assignment]
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


def cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


class SpawnClock:
    """Wall time of every `Spawner._spawn`, and of the GIL-free foreign call within it."""

    def __init__(self, how: str) -> None:
        self.spawns = 0
        self.spawning = 0.0
        self.foreign = 0.0
        whole = spawner.Spawner._spawn

        def timed_spawn(loop: spawner.Spawner, *arguments: object) -> None:
            started = time.perf_counter()
            try:
                whole(loop, *arguments)  # type: ignore[arg-type]
            finally:
                self.spawning += time.perf_counter() - started
                self.spawns += 1

        spawner.Spawner._spawn = timed_spawn  # type: ignore[method-assign]
        if native is None:  # os.posix_spawn, or Popen (the GIL held throughout)
            if how == "popen":
                spawner._own_working_directory = lambda: False
            return
        if how != "native":
            native.available = lambda: None
            if how == "popen":
                spawner._own_working_directory = lambda: False
            return
        made = native.available

        def timed_native() -> native.NativeSpawn | None:
            spawn = made()
            if spawn is not None:
                call = spawn.posix_spawn

                def timed_call(*arguments: object) -> int:
                    started = time.perf_counter()
                    try:
                        return int(call(*arguments))
                    finally:
                        self.foreign += time.perf_counter() - started

                spawn.posix_spawn = timed_call  # type: ignore[assignment]
            return spawn

        native.available = timed_native

    def take(self) -> tuple[int, float, float]:
        taken = self.spawns, self.spawning, self.foreign
        self.spawns, self.spawning, self.foreign = 0, 0.0, 0.0
        return taken


def time_agent(count: int, slots: int, tracking: Tracking, folder: Path,
               clock: SpawnClock) -> tuple[float, float, float, float]:
    """Wall seconds, this process's CPU seconds, its reaped children's CPU seconds for
    COUNT attempts through the agent, and the seconds the spawner held the GIL per spawn."""
    objects = FsspecObjectStore(folder / "objects")
    settings = RunnerSettings(work_root=folder / "work",
                              confinement=Confinement(tracking=tracking))
    feeder = Feeder(count)
    agent = feeder.agent = LocalAgent(AgentInfo("bench", slots), objects, settings,
                                      feeder).start()
    try:
        clock.take()
        own, children = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter()
        feeder.lease(slots)
        feeder.done.wait()
        wall = time.perf_counter() - wall
        own = cpu(resource.RUSAGE_SELF) - own
        children = cpu(resource.RUSAGE_CHILDREN) - children
    finally:
        agent.shutdown()
    if feeder.failed:
        sys.exit(f"{len(feeder.failed)} attempts failed, the first: {feeder.failed[0]}")
    spawns, spawning, foreign = clock.take()
    print(f"  agent {wall:.3f} s, CPU {1000 * own / count:.3f} ms/instance, "
          f"{feeder.calls} report calls for {count} attempts; per spawn "
          f"{1000 * spawning / spawns:.3f} ms of which {1000 * foreign / spawns:.3f} ms "
          "without the GIL")
    return wall, own, children, (spawning - foreign) / spawns


def time_xargs(count: int, slots: int) -> tuple[float, float]:
    """Wall seconds of xargs running COUNT `bash -c true`, and its (and their) CPU."""
    numbers = "".join(f"{n}\n" for n in range(count))
    children, wall = cpu(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(["xargs", "-P", str(slots), "-n", "1", "bash", "-c", "true"],
                   input=numbers.encode(), check=True)
    return time.perf_counter() - wall, cpu(resource.RUSAGE_CHILDREN) - children


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--tracking", choices=["subreaper", "cgroup"], default="subreaper")
    parser.add_argument("--spawn", choices=["native", "os", "popen"], default="native")
    arguments = parser.parse_args()
    clock = SpawnClock(arguments.spawn)
    count, slots = arguments.count, arguments.slots
    agents, xargs = [], []
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-") as name:
        for run in range(arguments.repeat):
            agents.append(time_agent(count, slots, arguments.tracking, Path(name) / str(run),
                                     clock))
            xargs.append(time_xargs(count, slots))
    wall = min(run[0] for run in agents)
    own = min(run[1] for run in agents)
    children = min(run[2] for run in agents)
    held = min(run[3] for run in agents)
    xargs_wall = min(run[0] for run in xargs)
    xargs_cpu = min(run[1] for run in xargs)
    rounds = ", ".join(f"{agent[0] / other[0]:.2f}x"
                       for agent, other in zip(agents, xargs, strict=True))
    print(f"agent   {wall:7.3f} s  {1000 * wall / count:.3f} ms/instance  "
          f"({arguments.tracking}, {arguments.spawn} spawn, {slots} slots; best of "
          f"{arguments.repeat})")
    print(f"xargs   {xargs_wall:7.3f} s  {1000 * xargs_wall / count:.3f} ms/instance  "
          f"(-P {slots})")
    print(f"ratio   {wall / xargs_wall:.2f}x  (each round: {rounds})")
    print(f"agent Python CPU per instance: {1000 * own / count:.3f} ms  (its programs: "
          f"{1000 * children / count:.3f} ms; xargs and its programs: "
          f"{1000 * xargs_cpu / count:.3f} ms)")
    print(f"GIL held by the spawner per spawn: {1000 * held:.3f} ms")
    print(f"load average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
