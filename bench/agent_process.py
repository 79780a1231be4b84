"""What the agent process costs: its start-up, and the channel's cost per attempt.

    python bench/agent_process.py                    # 10 starts of each kind, 20,000 leases
    python bench/agent_process.py --repeat 30 --leases 100000 --batch 500

Start-up: from Popen to the child's `Ready` (its first heartbeat), for `idle` (an agent
that does nothing: the floor — the interpreter, the agent package, the lease protocol) and
`runner` (imports what a real agent process needs: the server's Settings, the object store
and the runner, and opens the object store).

Channel: LEASES attempts leased in batches of BATCH to an agent that reports each batch at
once (`Echo`: no program runs); the engine side's CPU (all its threads: pickling the
batches, the reader unpickling the reports) per attempt, and the round trips per second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchyard.agent.process import AgentProcess
from batchyard.agent.wire import AgentFactory
from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.domain.outcome import Outcome
from batchyard.ports.agents import AgentInfo, AgentListener, LeaseBatch, Report, batch_of


class Idle:
    """An agent that runs nothing."""

    def __init__(self, info: AgentInfo) -> None:
        self._info = info

    def info(self) -> AgentInfo:
        return self._info

    def lease(self, batch: Any) -> None: ...

    def cancel(self, keys: Any) -> None: ...

    def forget(self, job_id: str) -> None: ...

    def shutdown(self) -> None: ...


def idle(info: AgentInfo, listener: AgentListener) -> Idle:
    return Idle(info)


class Echo(Idle):
    """Reports every leased attempt at once, succeeded."""

    def __init__(self, info: AgentInfo, listener: AgentListener) -> None:
        super().__init__(info)
        self._listener = listener

    def lease(self, batch: LeaseBatch) -> None:
        done = Outcome(0, started_at=datetime.now(UTC), ended_at=datetime.now(UTC))
        self._listener.reported(self._info.id, [
            Report(batch.key(lease), lease.token, done) for lease in batch.leases])


def echo(info: AgentInfo, listener: AgentListener) -> Echo:
    return Echo(info, listener)


def runner(info: AgentInfo, data_dir: str, listener: AgentListener) -> Idle:
    """What a real factory imports and opens before it builds its agent."""
    from batchyard.adapters.objectstore import FsspecObjectStore
    from batchyard.runner.runner import RunnerSettings, run_attempt  # noqa: F401
    from batchyard.settings import Settings

    settings = Settings(data_dir=Path(data_dir))
    FsspecObjectStore(settings.object_root, settings.buckets)
    RunnerSettings(work_root=settings.work_root)
    return Idle(info)


class Quiet:
    def __init__(self) -> None:
        self.count = 0
        self.all_in = threading.Event()
        self.expected = 0

    def reported(self, agent_id: str, reports: Sequence[Report]) -> None:
        self.count += len(reports)
        if self.count >= self.expected:
            self.all_in.set()

    def heartbeat(self, agent_id: str, running: Sequence[int]) -> None: ...

    def gone(self, agent_id: str, reason: str) -> None: ...


def measure(factory: AgentFactory, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        agent = AgentProcess(AgentInfo("bench", 1), Quiet(), factory).start()
        times.append(agent.ready_after)
        agent.shutdown()
    return times


def channel(leases: int, size: int) -> None:
    listener = Quiet()
    listener.expected = leases
    agent = AgentProcess(AgentInfo("bench", size), listener, AgentFactory("agent_process:echo"))
    agent.start()
    requests = [(token, AttemptRequest(AttemptKey("job-1", "task", token, 1), leases, "true",
                                       "", {}, 0, "oss://bench/logs/", "oss://bench/logs/"))
                for token in range(leases)]
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(0, leases, size):
        agent.lease(batch_of(requests[start:start + size]))
    listener.all_in.wait()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    agent.shutdown()
    print(f"channel {leases} attempts in batches of {size}: engine-side CPU "
          f"{cpu / leases * 1e6:.1f} µs per attempt, {leases / wall:,.0f} attempts/s "
          f"round trip (load {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--leases", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=200)
    options = parser.parse_args()
    repeat = options.repeat
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])])
    with tempfile.TemporaryDirectory() as data_dir:
        for name, factory in (("idle", AgentFactory("agent_process:idle")),
                              ("runner", AgentFactory("agent_process:runner", (data_dir,)))):
            times = [1000 * seconds for seconds in measure(factory, repeat)]
            print(f"{name:7} Popen → Ready: median {statistics.median(times):.0f} ms, "
                  f"min {min(times):.0f} ms, max {max(times):.0f} ms ({repeat} starts; "
                  f"load {os.getloadavg()[0]:.1f})")
    channel(options.leases, options.batch)


if __name__ == "__main__":
    sys.exit(main())
