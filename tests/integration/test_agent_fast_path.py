"""The spawner loop's shortcuts keep the fast path's behaviour: every program's environment
is `program_environment`'s, reports that lease more from the loop start them at once, and
live logs ship for a long attempt among short ones."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.agent.agent import LocalAgent
from batchyard.agent.spawner import Spawner
from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.domain.outcome import ErrorCode
from batchyard.ports.agents import AgentInfo, Report, batch_of
from batchyard.runner.confinement import Confinement
from batchyard.runner.environment import program_environment
from batchyard.runner.settings import RunnerSettings
from tests.integration.test_agent import (
    JOB,
    Recorder,
    lease,
    log,
    open_agent,
    request,
    settings_in,
)
from tests.security.conftest import until


def attempt(task: str, instance: int, number: int = 1, **changes: object) -> AttemptRequest:
    return replace(request("true", instance, task), key=AttemptKey(JOB, task, instance, number),
                   **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("inherit", [False, True])
def test_each_attempts_environment_is_program_environments(tmp_path: Path,
                                                           inherit: bool) -> None:
    objects = FsspecObjectStore(tmp_path / "objects")
    settings = RunnerSettings(work_root=tmp_path / "work", inherit_environment=inherit,
                              python_path="/opt/lib")
    spawner = Spawner(objects, settings, deque(), True, lambda _: None, lambda _: None)
    store = objects.program_environment()
    attempts = [
        attempt("a", 0), attempt("a", 1), attempt("a", 1, 2, retry_count=1),
        attempt("b", 0, env_vars={"HOME": "/elsewhere", "PYTHONPATH": "/mine"}),
        attempt("b", 5, env_vars={"HOME": "/elsewhere", "PYTHONPATH": "/mine"}),
        attempt("b", 6, env_vars={"HOME": "/changed"}),
        attempt("c", 0, env_vars={"BATCH_COMPUTE_DAG_INSTANCE_ID": "forged"}),
        attempt("c", 9, env_vars={"BATCH_COMPUTE_DAG_INSTANCE_ID": "forged"}),
        attempt("c", 9, env_vars={"X": "contains \0 a NUL"}),
        attempt("c", 10, env_vars={"X": "contains \0 a NUL"}),
        attempt("c", 11, instance_count=12, worker_id="w-2", cluster_id="cls-1"),
        attempt("a", 2),
    ]
    for number, item in enumerate(attempts):
        workdir = str(tmp_path / "work" / f"w{number}" / "workdir")
        expected = program_environment(item, store, settings, workdir, False)
        got = spawner._environment(item, workdir)
        assert list(got.items()) == list(expected.items()), item


class Chain:
    """A listener that leases the next attempt from `reported` (on the agent's own loop)."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.reports: list[Report] = []
        self.done = threading.Event()
        self.agent: LocalAgent | None = None

    def reported(self, agent_id: str, reports: Sequence[Report]) -> None:
        self.reports += reports
        assert self.agent is not None
        if len(self.reports) < self.length:
            self.start(len(self.reports))
        else:
            self.done.set()

    def start(self, instance: int) -> None:
        assert self.agent is not None
        self.agent.lease(batch_of([(instance + 1, request("true", instance))]))

    def heartbeat(self, agent_id: str, running: Sequence[int]) -> None:
        pass

    def gone(self, agent_id: str, reason: str) -> None:
        raise AssertionError("a local agent is never gone")


def test_attempts_leased_from_a_report_start_without_waiting(tmp_path: Path) -> None:
    """Nothing else wakes the loop here (no heartbeat, live logs a minute away): each
    attempt starts only because the loop reads what it posted itself in that turn."""
    objects = FsspecObjectStore(tmp_path / "objects")
    settings = RunnerSettings(work_root=tmp_path / "work", log_interval=60,
                              confinement=Confinement(tracking="subreaper"))
    chain = Chain(30)
    agent = chain.agent = LocalAgent(AgentInfo("agent-1", slots=1, heartbeat=0), objects,
                                     settings, chain).start()
    try:
        chain.start(0)
        assert chain.done.wait(20), len(chain.reports)
    finally:
        agent.shutdown()
    assert all(report.outcome.succeeded for report in chain.reports)


def test_live_logs_ship_for_a_long_attempt_behind_short_ones(tmp_path: Path) -> None:
    objects = FsspecObjectStore(tmp_path / "objects")
    recorder = Recorder()
    agent = open_agent(objects, settings_in(tmp_path / "work"), recorder, slots=2)
    try:
        lease(agent, *(request("true", instance) for instance in range(6)))
        recorder.wait(6)
        lease(agent, request("true", 6), request("echo early; sleep 30", 0, "long"),
              *(request("true", instance) for instance in range(8, 14)), first=7)
        assert until(lambda: log_or_none(objects, "long") == "early\n", 10)
        assert 8 not in recorder.wait(13)  # all but the long one (token 8): still running
        agent.cancel([AttemptKey(JOB, "long", 0, 1)])
        assert recorder.wait(14)[8].error_code is ErrorCode.STOPPED
    finally:
        agent.shutdown()


def log_or_none(objects: FsspecObjectStore, task: str) -> str | None:
    try:
        return log(objects, "stdout", 0, task)
    except Exception:
        return None

