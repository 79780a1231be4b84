"""A per-attempt memory limit: which limit an attempt gets, how an OOM kill becomes
MemoryLimitExceeded, and the new fields of a lease on their way to the agent (the real
processes are in tests/integration/test_memory_limit.py)."""

from __future__ import annotations

import errno
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batchyard.agent import wire
from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.ports.agents import LeaseBatch, Report, batch_of
from batchyard.runner import cgroups
from batchyard.runner.cgroups import MemoryCount, SlotGroup
from batchyard.runner.confinement import Limits
from batchyard.runner.program import ProgramEnd
from batchyard.runner.runner import memory_message, memory_verdict

MIB = 1 << 20
GIB = 1 << 30
KILLED = ProgramEnd(-signal.SIGKILL, cancelled=False, timed_out=False)
EXITED = ProgramEnd(1, cancelled=False, timed_out=False)


# ---- which limit --------------------------------------------------------------------------


def test_an_attempt_s_own_memory_replaces_the_default_and_none_keeps_it() -> None:
    default = Limits(memory_bytes=512 * MIB, max_processes=100, disk_bytes=GIB)
    assert default.with_memory(4 * GIB) == Limits(4 * GIB, 100, GIB)
    assert default.with_memory(0) is default
    assert default.with_memory(-5) is default  # never a negative limit
    assert Limits().with_memory(64 * MIB).memory_bytes == 64 * MIB


# ---- the OOM killer's counts --------------------------------------------------------------


@pytest.mark.parametrize(("before", "after", "sigkilled", "killed"), [
    (MemoryCount(0, 0), MemoryCount(1, 5), True, True),
    (MemoryCount(3, 0), MemoryCount(4, 0), False, True),  # a child killed, the leader exited 1
    (MemoryCount(2, 0), MemoryCount(2, 9), True, False),  # reached the limit, reclaimed, not killed
    (MemoryCount(None, 1), MemoryCount(None, 2), True, True),  # v1 before 4.13: failcnt + SIGKILL
    (MemoryCount(None, 1), MemoryCount(None, 2), False, False),
    (MemoryCount(None, 1), MemoryCount(None, 1), True, False),  # killed by someone else
], ids=["oom-kill", "child-killed", "limit-hit-only", "failcnt-sigkill", "failcnt-exit",
        "sigkill-no-hit"])
def test_an_oom_kill_is_told_by_the_kernel_s_counts(before: MemoryCount, after: MemoryCount,
                                                     sigkilled: bool, killed: bool) -> None:
    assert after.oom_killed_since(before, sigkilled) is killed


def test_an_oom_kill_fails_the_attempt_with_memory_limit_exceeded() -> None:
    verdict = memory_verdict(KILLED, MemoryCount(0), MemoryCount(1), 4 * GIB, "ecs.sn1.medium")
    assert verdict is not None and verdict.failed
    assert (verdict.exit_code, verdict.error_code) == (137, ErrorCode.MEMORY)
    assert verdict.message == ("killed: used more than the 4.0 GiB of memory of its "
                               "InstanceType ecs.sn1.medium; choose a larger InstanceType")


def test_other_ends_are_not_memory_verdicts() -> None:
    assert memory_verdict(KILLED, MemoryCount(1), MemoryCount(1), GIB, "t") is None
    assert memory_verdict(EXITED, MemoryCount(0), MemoryCount(0), GIB, "t") is None
    assert memory_verdict(KILLED, MemoryCount(0), None, GIB, "t") is None  # the count is gone


def test_the_message_without_an_instance_type_names_the_limit() -> None:
    assert memory_message(64 * MIB, "") == ("killed: used more than its memory limit of "
                                            "64.0 MiB; choose an InstanceType with more memory")
    assert "1.5 GiB" in memory_message(3 * GIB // 2, "")
    assert "512.0 KiB" in memory_message(512 * 1024, "")


# ---- the lease's new fields ---------------------------------------------------------------


def request(task: str, instance: int, memory: int, instance_type: str) -> AttemptRequest:
    return AttemptRequest(AttemptKey("job-1", task, instance, 1), 2, "true", "", {"A": "1"},
                          60, "oss://b/l/", "oss://b/l/", cluster_id="cls-1",
                          memory_bytes=memory, instance_type=instance_type)


def test_memory_and_instance_type_travel_once_per_task() -> None:
    sent = [request("small", 0, 4 * GIB, "ecs.sn1.medium"),
            request("small", 1, 4 * GIB, "ecs.sn1.medium"), request("plain", 0, 0, "")]
    batch = batch_of(list(enumerate(sent, start=1)))
    assert len(batch.parts) == 2
    assert (batch.parts[0].memory_bytes, batch.parts[0].instance_type) == (
        4 * GIB, "ecs.sn1.medium")
    assert (batch.parts[1].memory_bytes, batch.parts[1].instance_type) == (0, "")
    assert [built for _, built in batch.requests()] == sent


def test_the_new_fields_cross_the_agent_process_channel() -> None:
    batch = batch_of([(7, request("t", 0, 64 * MIB, "ecs.test.tiny"))], worker="vm-9")
    frame = wire.encode(batch)
    received = wire.to_agent(frame[4:])
    assert isinstance(received, LeaseBatch) and received == batch
    [(_, built)] = list(received.requests())
    assert (built.memory_bytes, built.instance_type, built.worker_id) == (
        64 * MIB, "ecs.test.tiny", "vm-9")

    outcome = Outcome(137, ErrorCode.MEMORY, memory_message(64 * MIB, "ecs.test.tiny"),
                      started_at=datetime.now(UTC))
    reported = wire.Reported((Report(built.key, 7, outcome),))
    back = wire.from_agent(wire.encode(reported)[4:])  # the engine's restricted unpickler
    assert back == reported



# ---- the slot's memory files (plain files standing in for a cgroup's; the real ones are
# ---- written in tests/integration/test_memory_limit.py) -----------------------------------


def fake_slot(tmp_path: Path, version: int, files: dict[str, str]) -> SlotGroup:
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    return SlotGroup([tmp_path], version)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every cgroup file write, in order, as (file name, value)."""
    done: list[tuple[str, str]] = []
    original = cgroups._write

    def record(path: Path, value: str) -> None:
        done.append((path.name, value))
        original(path, value)

    monkeypatch.setattr(cgroups, "_write", record)
    return done


V1 = {"memory.limit_in_bytes": "9223372036854771712", "memory.memsw.limit_in_bytes":
      "9223372036854771712", "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n"
      "oom_kill 2\n", "memory.failcnt": "7"}


def test_v1_lifts_memory_plus_swap_first_and_writes_only_a_changed_limit(
        tmp_path: Path, writes: list[tuple[str, str]]) -> None:
    slot = fake_slot(tmp_path, 1, V1)
    assert slot.set_memory(64 * MIB)
    assert writes == [("memory.memsw.limit_in_bytes", "-1"),
                      ("memory.limit_in_bytes", str(64 * MIB)),
                      ("memory.memsw.limit_in_bytes", str(64 * MIB))]
    writes.clear()
    assert slot.set_memory(64 * MIB) and writes == []  # the previous attempt's: unchanged
    assert slot.set_memory(0)  # none: lifted, swap and all
    assert writes == [("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1")]
    assert slot.memory_count() == MemoryCount(2)


def test_v1_without_swap_accounting_or_an_oom_kill_count(tmp_path: Path,
                                                          writes: list[tuple[str, str]]) -> None:
    slot = fake_slot(tmp_path, 1, {"memory.limit_in_bytes": "0", "memory.failcnt": "7",
                                   "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\n"})
    assert slot.set_memory(GIB) and writes == [("memory.limit_in_bytes", str(GIB))]
    assert slot.memory_count() == MemoryCount(None, 7)  # Linux before 4.13: failcnt


def test_v1_drops_what_the_last_attempt_left_charged_when_the_kernel_cannot_reclaim_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slot = fake_slot(tmp_path, 1, {"memory.limit_in_bytes": "0"})
    done: list[tuple[str, str]] = []

    def busy_once(path: Path, value: str) -> None:
        done.append((path.name, value))
        if done == [("memory.limit_in_bytes", value)]:  # the first write only
            raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(cgroups, "_write", busy_once)
    assert slot.set_memory(64 * MIB)
    assert done == [("memory.limit_in_bytes", str(64 * MIB)), ("memory.force_empty", "0"),
                    ("memory.limit_in_bytes", str(64 * MIB))]


def test_a_refused_limit_is_an_error_and_never_taken_for_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slot = fake_slot(tmp_path, 2, {"memory.max": "max"})

    def refuse(path: Path, value: str) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(cgroups, "_write", refuse)
    with pytest.raises(OSError):
        slot.set_memory(64 * MIB)
    monkeypatch.undo()
    assert slot.set_memory(64 * MIB)  # written now: the failed one was not remembered
    assert (tmp_path / "memory.max").read_text() == str(64 * MIB)


def test_v2_forbids_swap_under_a_limit_and_counts_oom_kills_in_memory_events(
        tmp_path: Path, writes: list[tuple[str, str]]) -> None:
    slot = fake_slot(tmp_path, 2, {"memory.max": "max", "memory.swap.max": "max",
                                   "memory.events": "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n"})
    assert slot.set_memory(4 * GIB)
    assert writes == [("memory.max", str(4 * GIB)), ("memory.swap.max", "0")]
    assert slot.set_memory(0)
    assert writes[2:] == [("memory.max", "max"), ("memory.swap.max", "max")]
    assert slot.memory_count() == MemoryCount(1, 12)


def test_a_slot_without_a_memory_controller_limits_nothing(tmp_path: Path) -> None:
    slot = fake_slot(tmp_path, 2, {"cgroup.procs": ""})  # v2 without memory delegated
    assert slot.memory is None
    assert not slot.set_memory(64 * MIB)
    assert slot.memory_count() is None
    assert slot.limit(64 * MIB, 0) == ["memory"]


def test_the_operator_s_memory_setting_caps_every_instance_type() -> None:
    from batchyard.runner.confinement import Limits

    typed = Limits(memory_bytes=1 << 30)  # no setting: the type's memory
    assert typed.with_memory(4 << 30).memory_bytes == 4 << 30
    capped = Limits(memory_bytes=64 << 20, memory_cap=64 << 20)
    assert capped.with_memory(4 << 30).memory_bytes == 64 << 20
    assert capped.with_memory(32 << 20).memory_bytes == 32 << 20
    unlimited = Limits(memory_bytes=0, memory_cap=0)
    assert unlimited.with_memory(4 << 30).memory_bytes == 0
