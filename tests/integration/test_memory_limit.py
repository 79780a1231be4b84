"""A confined attempt's memory is limited to what its request says (its InstanceType's), in
its slot's memory cgroup: real agents, real bubblewrap sandboxes, real programs, the real
kernel's OOM killer. Skipped where this machine gives batchyard no memory cgroup (or no
bubblewrap); the rules themselves are in tests/unit/test_memory_limit.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.agent import wire
from batchyard.agent.agent import LocalAgent
from batchyard.agent.process import AgentProcess
from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.hosting import open_objects
from batchyard.ports.agents import AgentInfo, batch_of
from batchyard.runner import cgroups
from batchyard.runner.cgroups import Cgroups, Hierarchy
from batchyard.runner.confinement import Confinement, Limits
from batchyard.runner.runner import memory_message
from batchyard.runner.sandbox import bwrap_path
from batchyard.runner.settings import RunnerSettings
from batchyard.settings import Settings
from tests.integration.test_agent import JOB, LOGS, Recorder, log, open_agent
from tests.integration.test_agent_process import Recorder as ProcessRecorder

MIB = 1 << 20
DEFAULT = 96 * MIB
"""The agent's own limit, for attempts whose request names none."""


def hog(mib: int) -> str:
    """A program that fills `mib` MiB of memory (every page touched) and says so."""
    return f"python3 -c 'b = bytearray({mib} * 1024 * 1024); print(len(b) >> 20, \"MiB\")'"


def request(command: str, memory: int = 0, instance_type: str = "", instance: int = 0,
            task: str = "t") -> AttemptRequest:
    return AttemptRequest(
        key=AttemptKey(JOB, task, instance, 1), instance_count=100, command_line=command,
        package_path="", env_vars={}, timeout=60, stdout_dir=LOGS, stderr_dir=LOGS,
        memory_bytes=memory, instance_type=instance_type)


def memory_hierarchy(version: int) -> Hierarchy:
    """A writable hierarchy with a memory controller (v1) or the unified one (v2)."""
    for hierarchy in cgroups._hierarchies(Path("/proc/self/mountinfo"),
                                          Path("/proc/self/cgroup")):
        wanted = "memory" if version == 1 else ""
        if (hierarchy.version, hierarchy.controller) == (version, wanted) \
                and os.access(hierarchy.own, os.W_OK):
            return hierarchy
    pytest.skip(f"no writable cgroup v{version} memory hierarchy on this machine")


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def confined_settings(request: pytest.FixtureRequest, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch) -> RunnerSettings:
    """Every attempt in the sandbox, in slots with memory cgroups of the version asked for."""
    if bwrap_path() is None:
        pytest.skip("bubblewrap is not installed")
    version: int = request.param
    hierarchy = memory_hierarchy(version)
    groups = Cgroups([hierarchy], f"test-memory-{os.getpid()}-{version}")
    monkeypatch.setattr(cgroups, "available", lambda *_, **__: groups)
    confinement = Confinement(sandbox=True, tracking="cgroup", limits=Limits(DEFAULT))
    return RunnerSettings(work_root=tmp_path / "work", kill_grace=0.5, log_interval=0.2,
                          confinement=confinement)


@pytest.fixture
def objects(tmp_path: Path) -> FsspecObjectStore:
    return FsspecObjectStore(tmp_path / "objects")


def confined_agent(objects: FsspecObjectStore, settings: RunnerSettings, recorder: Recorder,
                   slots: int) -> LocalAgent:
    agent = open_agent(objects, settings, recorder, slots=slots)
    if not agent.memory_limits:
        agent.shutdown()
        pytest.skip("the slots' cgroups have no memory controller here (not delegated)")
    return agent


@pytest.fixture
def one_slot(objects: FsspecObjectStore, confined_settings: RunnerSettings,
             recorder: Recorder) -> Iterator[LocalAgent]:
    agent = confined_agent(objects, confined_settings, recorder, slots=1)
    yield agent
    agent.shutdown()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def lease_in_order(agent: LocalAgent, *requests: AttemptRequest) -> None:
    agent.lease(batch_of([(token, item) for token, item in enumerate(requests, start=1)]))


def slot_limit(agent: LocalAgent) -> int:
    """The memory limit the agent's only slot has now."""
    [group] = agent._slot_pool._groups
    folder = group.memory
    assert folder is not None
    name = "memory.limit_in_bytes" if group.version == 1 else "memory.max"
    value = (folder / name).read_text().strip()
    return 0 if value == "max" or int(value) >= 1 << 62 else int(value)


def test_an_attempt_past_its_instance_type_s_memory_fails_with_memory_limit_exceeded(
        one_slot: LocalAgent, recorder: Recorder, objects: FsspecObjectStore) -> None:
    lease_in_order(one_slot, request(hog(256), 64 * MIB, "ecs.test.tiny"))
    outcome = recorder.wait(1)[1]
    expected = ("killed: used more than the 64.0 MiB of memory of its InstanceType "
                "ecs.test.tiny; choose a larger InstanceType")
    assert (outcome.error_code, outcome.exit_code) == (ErrorCode.MEMORY, 137), outcome
    assert outcome.error_message == expected
    assert f"batchyard: {expected}" in log(objects, "stderr")  # said where the user looks
    assert slot_limit(one_slot) == 64 * MIB


def test_an_attempt_within_its_memory_succeeds(one_slot: LocalAgent, recorder: Recorder,
                                               objects: FsspecObjectStore) -> None:
    lease_in_order(one_slot, request(hog(32), 256 * MIB, "ecs.test.small"))
    outcome = recorder.wait(1)[1]
    assert outcome.succeeded, outcome
    assert log(objects, "stdout").strip() == "32 MiB"


def test_each_attempt_in_a_slot_gets_its_own_limit(one_slot: LocalAgent,
                                                   recorder: Recorder) -> None:
    """One slot, four attempts in turn, each needing 128 MiB: the limit is each one's own,
    never the one before's — and an attempt that names none gets the agent's default."""
    lease_in_order(one_slot,  # four tasks (a task's instances share one InstanceType)
                   request(hog(128), 64 * MIB, "ecs.test.tiny", task="a"),   # too small
                   request(hog(128), 512 * MIB, "ecs.test.big", task="b"),   # large enough
                   request(hog(128), 0, "", task="c"),                       # the default
                   request(hog(128), 256 * MIB, "ecs.test.small", task="d"))  # enough again
    outcomes = recorder.wait(4, timeout=60)
    assert [outcomes[token].error_code for token in (1, 2, 3, 4)] == [
        ErrorCode.MEMORY, ErrorCode.NONE, ErrorCode.MEMORY, ErrorCode.NONE], outcomes
    assert outcomes[3].error_message == memory_message(DEFAULT, "")
    assert slot_limit(one_slot) == 256 * MIB


def test_no_limit_at_all_lifts_the_previous_attempt_s(
        objects: FsspecObjectStore, confined_settings: RunnerSettings,
        recorder: Recorder) -> None:
    """An installation without a default limit (BATCHYARD_SANDBOX__MEMORY_BYTES=0): an
    attempt naming none runs unlimited, even after one that had a small limit."""
    unlimited = replace(confined_settings.confinement, limits=Limits())
    agent = confined_agent(objects, replace(confined_settings, confinement=unlimited),
                           recorder, slots=1)
    try:
        lease_in_order(agent, request(hog(128), 64 * MIB, "ecs.test.tiny", task="a"),
                       request(hog(128), 0, "", task="b"))
        outcomes = recorder.wait(2, timeout=60)
        assert outcomes[1].error_code is ErrorCode.MEMORY
        assert outcomes[2].succeeded, outcomes[2]
        assert slot_limit(agent) == 0
    finally:
        agent.shutdown()


def test_the_limit_covers_swap_and_is_written_only_when_it_changes(
        confined_settings: RunnerSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    groups = cgroups.available(confined_settings.work_root)
    assert groups is not None
    groups.enable_limits()
    group = groups.slot(0)
    try:
        if group.memory is None:
            pytest.skip("the slots' cgroups have no memory controller here (not delegated)")
        swap = "memory.memsw.limit_in_bytes" if group.version == 1 else "memory.swap.max"
        has_swap = (group.memory / swap).exists()
        assert group.set_memory(64 * MIB)
        if has_swap:  # v1: memory plus swap = the limit; v2: no swap at all
            expected = str(64 * MIB) if group.version == 1 else "0"
            assert (group.memory / swap).read_text().strip() == expected
        writes: list[Path] = []
        original = cgroups._write
        monkeypatch.setattr(cgroups, "_write", lambda path, value: (
            writes.append(path), original(path, value)))
        assert group.set_memory(64 * MIB)
        assert writes == []  # the same limit as the slot's last attempt: nothing written
        assert group.set_memory(0)
        assert writes != []
        count = group.memory_count()
        assert count is not None and count.oom_kills is not None  # counted on this kernel
    finally:
        groups.remove()


def test_unconfined_attempts_keep_the_fast_path_and_no_memory_limit(
        objects: FsspecObjectStore, tmp_path: Path, recorder: Recorder) -> None:
    """Limits come with the sandbox: `batchyard run` without it (the fast path, slots with
    a cgroup for tracking only) runs an attempt whatever memory its request names."""
    settings = RunnerSettings(work_root=tmp_path / "work",
                              confinement=Confinement(tracking="auto"))
    agent = open_agent(objects, settings, recorder, slots=1)
    try:
        lease_in_order(agent, request(hog(128), 64 * MIB, "ecs.test.tiny"))
        outcome = recorder.wait(1)[1]
    finally:
        agent.shutdown()
    assert outcome.succeeded, outcome


# ---- as under `serve`: the agent in a process of its own -----------------------------------


def test_under_serve_the_agent_process_limits_memory_and_names_the_worker(
        tmp_path: Path) -> None:
    """The agent `serve` runs (its own process, every attempt confined, the server's
    settings): the new fields cross the channel; the attempt runs on the VM the lease
    names (BATCH_COMPUTE_WORKER_ID) under its InstanceType's memory."""
    if bwrap_path() is None:
        pytest.skip("bubblewrap is not installed")
    settings = Settings(data_dir=tmp_path / "data", slots=1)
    probe = cgroups.available(settings.work_root, ("memory",))
    if probe is not None:
        probe.remove()
    if probe is None or (probe.version != 1 and not _v2_memory_delegable(probe)):
        pytest.skip("no memory cgroup this machine lets batchyard manage")
    recorder = ProcessRecorder()
    factory = wire.AgentFactory("batchyard.hosting:hosted_agent", (settings, True))
    agent = AgentProcess(AgentInfo("agent-1", 1, heartbeat=0.5), recorder, factory,
                         work_root=settings.work_root).start()
    try:
        agent.lease(batch_of([
            (1, request(hog(256), 64 * MIB, "ecs.test.tiny", 0)),
            (2, request(f"echo $BATCH_COMPUTE_WORKER_ID; {hog(128)}", 256 * MIB,
                        "ecs.test.small", 1, task="u"))], worker="vm-42"))
        recorder.wait(lambda: sum(len(batch) for batch in recorder.reports) == 2, 60)
    finally:
        agent.shutdown()
    outcomes: dict[int, Outcome] = {report.token: report.outcome
                                    for batch in recorder.reports for report in batch}
    assert outcomes[1].error_code is ErrorCode.MEMORY, outcomes[1]
    assert "ecs.test.tiny" in outcomes[1].error_message
    assert outcomes[2].succeeded, outcomes[2]
    printed = open_objects(settings).read_bytes(f"{LOGS}stdout.{JOB}.u.1").decode()
    assert printed.split() == ["vm-42", "128", "MiB"]


def _v2_memory_delegable(groups: Cgroups) -> bool:
    controllers = groups.hierarchies[0].own / "cgroup.controllers"
    return "memory" in controllers.read_text().split()
