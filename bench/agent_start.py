"""How long an agent process takes to start: from Popen to its `Ready` (its first heartbeat).

    python bench/agent_start.py              # 10 starts of each kind
    python bench/agent_start.py --repeat 30

Two agents: `idle` (does nothing: the floor of the transport — the interpreter, the agent
package, the lease protocol) and `runner` (imports what a real agent process needs:
the server's Settings, the object store and the runner, and opens the object store).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batchyard.agent.process import AgentProcess
from batchyard.agent.wire import AgentFactory
from batchyard.ports.agents import AgentInfo, AgentListener, Report


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
    def reported(self, agent_id: str, reports: Sequence[Report]) -> None: ...

    def heartbeat(self, agent_id: str, running: Sequence[int]) -> None: ...

    def gone(self, agent_id: str, reason: str) -> None: ...


def measure(factory: AgentFactory, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        agent = AgentProcess(AgentInfo("bench", 1), Quiet(), factory).start()
        times.append(agent.ready_after)
        agent.shutdown()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    repeat = parser.parse_args().repeat
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])])
    with tempfile.TemporaryDirectory() as data_dir:
        for name, factory in (("idle", AgentFactory("agent_start:idle")),
                              ("runner", AgentFactory("agent_start:runner", (data_dir,)))):
            times = [1000 * seconds for seconds in measure(factory, repeat)]
            print(f"{name:7} Popen → Ready: median {statistics.median(times):.0f} ms, "
                  f"min {min(times):.0f} ms, max {max(times):.0f} ms ({repeat} starts; "
                  f"load {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    sys.exit(main())
