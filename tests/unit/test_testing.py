"""The stand-ins of `batchyard.testing` themselves: what a test of the engine relies on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.domain.outcome import ErrorCode
from batchyard.errors import ObjectNotFound
from batchyard.ports.agents import Report, batch_of
from batchyard.ports.objects import ObjectInfo
from batchyard.testing import FakeClock, InlineAgent, MemoryObjectStore, MemoryStore


def request(task: str, instance_id: int, attempt: int = 1) -> AttemptRequest:
    return AttemptRequest(AttemptKey("job-1", task, instance_id, attempt), 12, "true", "", {},
                          0, "oss://b/logs/", "oss://b/logs/")


class Heard:
    """An AgentListener keeping what it is told."""

    def __init__(self) -> None:
        self.reports: list[Report] = []
        self.calls = 0

    def reported(self, agent_id: str, reports: Sequence[Report]) -> None:
        self.calls += 1
        self.reports += reports

    def heartbeat(self, agent_id: str, running: Sequence[int]) -> None:
        """Not used here."""

    def gone(self, agent_id: str, reason: str) -> None:
        """Not used here."""


@pytest.fixture
def heard() -> Heard:
    return Heard()


def lease(agent: InlineAgent, *requests: AttemptRequest) -> None:
    agent.lease(batch_of([(100 + n, each) for n, each in enumerate(requests)]))


@pytest.fixture
def agent(heard: Heard) -> InlineAgent:
    made = InlineAgent(heard, slots=3)
    lease(made, *(request("t", index) for index in (1, 10, 2)))
    lease(made, request("u", 0))
    return made


def test_a_prefix_names_whole_parts_of_the_key(agent: InlineAgent, heard: Heard) -> None:
    assert agent.finish("job-1/t/1") == [AttemptKey("job-1", "t", 1, 1)]  # not t/10
    assert agent.finish("job-1/t/", exit_code=3) == [AttemptKey("job-1", "t", 10, 1),
                                                     AttemptKey("job-1", "t", 2, 1)]
    assert agent.keys() == ["job-1/u/0#1"] and heard.calls == 2  # one report batch per call
    outcome = heard.reports[-1].outcome
    assert (outcome.exit_code, outcome.error_code, outcome.error_message) == (
        3, ErrorCode.EXIT_CODE, "exited with code 3")
    assert outcome.stdout_path == "oss://b/logs/stdout.job-1.t.2"
    assert heard.reports[0].outcome.succeeded and heard.reports[0].token == 100
    with pytest.raises(LookupError, match="job-1/u/0#1"):
        agent.finish("job-1/t")  # nothing of t runs any more
    assert agent.info().slots == 3 and len(agent.submitted) == 4 and len(agent.batches) == 2


def test_cancel_reports_stopped_once_and_shutdown_cancels_what_runs(
        agent: InlineAgent, heard: Heard) -> None:
    key = AttemptKey("job-1", "u", 0, 1)
    agent.cancel([key])
    agent.cancel([key])  # not running any more: nothing to report
    agent.cancel([AttemptKey("job-2", "t", 0, 1)])
    assert [(r.key, r.outcome.error_code) for r in heard.reports] == [(key, ErrorCode.STOPPED)]
    agent.shutdown()
    assert agent.running() == [] and len(heard.reports) == 4
    assert agent.cancelled[:3] == [key, key, AttemptKey("job-2", "t", 0, 1)]
    lease(agent, request("t", 1))
    with pytest.raises(ValueError, match="twice"):
        lease(agent, request("t", 1))


def test_the_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(100.0)
    assert clock() == clock() == 100.0
    assert clock.advance(2.5) == 102.5 and clock() == 102.5
    with pytest.raises(ValueError):
        clock.advance(-1)
    clock.set(50.0)
    assert clock() == 50.0


def test_a_transaction_inside_a_transaction_is_refused() -> None:
    store = MemoryStore()
    with store.transaction(), pytest.raises(RuntimeError, match="inside a transaction"), \
            store.transaction():
        pass
    with store.transaction():  # the lock was given back
        pass


def test_the_memory_object_store_lists_like_a_bucket(tmp_path: Path) -> None:
    objects = MemoryObjectStore()
    objects.put_bytes("oss://b/a/1", b"one")
    objects.put_bytes("oss://b/a/d/2", b"two")
    (tmp_path / "three").write_bytes(b"three")
    objects.put_files([(tmp_path / "three", "oss://b/c")])
    assert objects.list("oss://b/") == [ObjectInfo("oss://b/a/", 0, True),
                                        ObjectInfo("oss://b/c", 5, False)]
    assert [info.url for info in objects.list("oss://b/a", recursive=True)] == [
        "oss://b/a/1", "oss://b/a/d/2"]
    assert objects.exists("oss://b/a") and not objects.exists("oss://b/x")
    objects.get_files([("oss://b/a/d/2", tmp_path / "got" / "2")])
    assert (tmp_path / "got" / "2").read_bytes() == b"two"
    objects.delete("oss://b/a")
    with pytest.raises(ObjectNotFound):
        objects.read_bytes("oss://b/a/1")
    assert [info.url for info in objects.list("oss://b/", recursive=True)] == ["oss://b/c"]
