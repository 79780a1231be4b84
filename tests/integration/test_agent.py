"""LocalAgent with real processes and a real object-store folder: leases in, reports out."""

from __future__ import annotations

import itertools
import os
import random
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.agent import agent as agent_module
from batchyard.agent.agent import LocalAgent
from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.ports.agents import AgentInfo, Report, batch_of
from batchyard.runner import cgroups
from batchyard.runner.cgroups import Cgroups
from batchyard.runner.confinement import Confinement, Limits
from batchyard.runner.runner import broken
from batchyard.runner.settings import RunnerSettings
from tests.integration.conftest import upload_package
from tests.integration.test_process_tracking import writable_hierarchy
from tests.security.conftest import processes_running, until

LOGS = "oss://bkt/logs/"
JOB = "job-00000000000000000000000000000A9E"


class Recorder:
    """An AgentListener that keeps every call, and lets a test wait for reports."""

    def __init__(self) -> None:
        self.reports: list[Report] = []
        self.calls = 0
        self.beats: list[list[int]] = []
        self._condition = threading.Condition()

    def reported(self, agent_id: str, reports: Sequence[Report]) -> None:
        with self._condition:
            self.reports += reports
            self.calls += 1
            self._condition.notify_all()

    def heartbeat(self, agent_id: str, running: Sequence[int]) -> None:
        with self._condition:
            self.beats.append(sorted(running))

    def gone(self, agent_id: str, reason: str) -> None:
        raise AssertionError("a local agent is never gone")

    def wait(self, count: int, timeout: float = 30) -> dict[int, Outcome]:
        """The outcomes by token, once `count` attempts have reported."""
        with self._condition:
            assert self._condition.wait_for(lambda: len(self.reports) >= count, timeout), \
                self.reports
            return {report.token: report.outcome for report in self.reports}


def request(command: str, instance: int = 0, task: str = "t", timeout: int = 60,
            package: str = "") -> AttemptRequest:
    return AttemptRequest(
        key=AttemptKey(JOB, task, instance, 1), instance_count=100, command_line=command,
        package_path=package, env_vars={"GREETING": "hello"}, timeout=timeout,
        stdout_dir=LOGS, stderr_dir=LOGS)


@pytest.fixture
def objects(tmp_path: Path) -> FsspecObjectStore:
    return FsspecObjectStore(tmp_path / "objects")


def settings_in(work_root: Path) -> RunnerSettings:
    return RunnerSettings(work_root=work_root, kill_grace=0.5, log_interval=0.2,
                          confinement=Confinement(tracking="subreaper"))


@pytest.fixture
def settings(tmp_path: Path) -> RunnerSettings:
    return settings_in(tmp_path / "work")


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def open_agent(objects: FsspecObjectStore, settings: RunnerSettings, recorder: Recorder,
               slots: int = 4, heartbeat: float = 2.0) -> LocalAgent:
    info = AgentInfo("agent-1", slots=slots, heartbeat=heartbeat)
    return LocalAgent(info, objects, settings, recorder).start()


@pytest.fixture
def agent(objects: FsspecObjectStore, settings: RunnerSettings,
          recorder: Recorder) -> Iterator[LocalAgent]:
    running = open_agent(objects, settings, recorder)
    yield running
    running.shutdown()


def lease(agent: LocalAgent, *requests: AttemptRequest, first: int = 1) -> None:
    agent.lease(batch_of([(first + n, item) for n, item in enumerate(requests)]))


def log(objects: FsspecObjectStore, stream: str, instance: int = 0, task: str = "t") -> str:
    return objects.read_bytes(f"{LOGS}{stream}.{JOB}.{task}.{instance}").decode()


def marker() -> int:
    return random.randrange(5_000_000, 6_000_000, 10)


def test_fifty_attempts_report_in_far_fewer_calls(objects: FsspecObjectStore,
                                                  settings: RunnerSettings,
                                                  recorder: Recorder) -> None:
    agent = open_agent(objects, settings, recorder, slots=50)
    try:
        lease(agent, *(request("true", instance) for instance in range(50)))
        outcomes = recorder.wait(50)
    finally:
        agent.shutdown()
    assert sorted(outcomes) == list(range(1, 51))
    assert all(outcome.succeeded for outcome in outcomes.values())
    assert recorder.calls <= 10, recorder.calls


def test_exit_codes_and_signals(agent: LocalAgent, recorder: Recorder) -> None:
    lease(agent, request("exit 3", 0, "a"), request("kill -9 $$", 0, "b"),
          request("true", 0, "c"))
    outcomes = recorder.wait(3)
    assert (outcomes[1].exit_code, outcomes[1].error_code) == (3, ErrorCode.EXIT_CODE)
    assert outcomes[1].error_message == "exited with code 3"
    assert (outcomes[2].exit_code, outcomes[2].error_message) == (137, "killed by signal SIGKILL")
    assert outcomes[3].succeeded and outcomes[3].exit_code == 0


def test_the_program_runs_in_its_workdir_with_its_environment(
        objects: FsspecObjectStore, tmp_path: Path, recorder: Recorder) -> None:
    settings = settings_in(tmp_path / "a work root with 'quotes', \"double\" and $dollars")
    agent = open_agent(objects, settings, recorder)
    try:
        lease(agent, request('pwd; echo "$GREETING $BATCH_COMPUTE_DAG_INSTANCE_ID"', 7))
        outcome = recorder.wait(1)[1]
    finally:
        agent.shutdown()
    assert outcome.succeeded, outcome
    workdir = settings.work_root / JOB / "t" / "7.attempt-1" / "workdir"
    assert log(objects, "stdout", 7) == f"{workdir}\nhello 7\n"
    assert os.getcwd() != str(workdir)


def test_relative_paths_keep_their_meaning_on_the_spawner_thread(
        tmp_path: Path, recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop changes its own working directory to spawn; a bucket in a folder relative to
    the process's working directory must still receive the logs."""
    monkeypatch.chdir(tmp_path)
    objects = FsspecObjectStore(tmp_path / "objects", {"near": "near-folder"})
    agent = open_agent(objects, settings_in(tmp_path / "work"), recorder)
    try:
        agent.lease(batch_of([(1, replace(request("echo here"), stdout_dir="oss://near/x/"))]))
        assert recorder.wait(1)[1].succeeded
    finally:
        agent.shutdown()
    assert (tmp_path / "near-folder" / "x" / f"stdout.{JOB}.t.0").read_text() == "here\n"


def test_programs_inherit_no_descriptor_beyond_the_standard_three(
        objects: FsspecObjectStore, settings: RunnerSettings, recorder: Recorder) -> None:
    inherited = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(inherited, True)
    agent = open_agent(objects, settings, recorder)
    try:
        lease(agent, request("ls /proc/self/fd"))
        assert recorder.wait(1)[1].succeeded
    finally:
        agent.shutdown()
        os.close(inherited)
    assert log(objects, "stdout").split() == ["0", "1", "2", "3"]  # 3: the listing's own


def test_logs_are_uploaded_with_their_names(agent: LocalAgent, recorder: Recorder,
                                            objects: FsspecObjectStore,
                                            settings: RunnerSettings) -> None:
    lease(agent, request("echo out; echo err >&2", 0, "good"),
          request("echo bad; exit 1", 1, "bad"))
    outcomes = recorder.wait(2)
    assert outcomes[1].stdout_path == f"{LOGS}stdout.{JOB}.good.0"
    assert outcomes[1].stderr_path == f"{LOGS}stderr.{JOB}.good.0"
    assert (log(objects, "stdout", 0, "good"), log(objects, "stderr", 0, "good")) == (
        "out\n", "err\n")
    assert not objects.exists(f"{LOGS}stdout.{JOB}.good.0.attempt-1")
    assert not (settings.work_root / JOB / "good" / "0.attempt-1").exists()
    assert log(objects, "stdout", 1, "bad") == "bad\n"
    assert objects.read_bytes(f"{LOGS}stdout.{JOB}.bad.1.attempt-1") == b"bad\n"
    assert (settings.work_root / JOB / "bad" / "1.attempt-1").is_dir()


def test_timeout_kills_the_whole_tree(agent: LocalAgent, recorder: Recorder,
                                      objects: FsspecObjectStore) -> None:
    number = marker()
    lease(agent, request(f"sleep {number} & sleep {number + 1}", timeout=1))
    outcome = recorder.wait(1)[1]
    assert (outcome.error_code, outcome.exit_code) == (ErrorCode.TIMEOUT, 143)
    assert outcome.error_message == "killed after exceeding Timeout of 1 s"
    assert not processes_running(f"sleep {number}")
    assert not processes_running(f"sleep {number + 1}")
    assert "batchyard: killed after exceeding Timeout of 1 s" in log(objects, "stderr")


def test_a_program_ignoring_sigterm_is_killed_after_the_grace(agent: LocalAgent,
                                                              recorder: Recorder) -> None:
    number = marker()
    lease(agent, request(f"trap '' TERM; sleep {number}", timeout=1))
    outcome = recorder.wait(1)[1]
    assert (outcome.error_code, outcome.exit_code) == (ErrorCode.TIMEOUT, 137)
    assert not processes_running(f"sleep {number}")


def test_cancel_stops_the_attempt_and_its_processes(agent: LocalAgent, recorder: Recorder,
                                                    objects: FsspecObjectStore) -> None:
    number = marker()
    lease(agent, request(f"sleep {number} & sleep {number + 1}"))
    assert until(lambda: processes_running(f"sleep {number + 1}"), 10)
    agent.cancel([AttemptKey(JOB, "t", 0, 1)])
    outcome = recorder.wait(1)[1]
    assert (outcome.error_code, outcome.exit_code) == (ErrorCode.STOPPED, 137)
    assert outcome.program_started_at is not None  # it ran, until it was stopped
    assert not processes_running(f"sleep {number}")
    assert not processes_running(f"sleep {number + 1}")
    assert log(objects, "stderr") == "batchyard: stopped: the attempt was cancelled\n"


def test_a_cancelled_attempt_waiting_for_a_slot_never_starts(
        objects: FsspecObjectStore, settings: RunnerSettings, recorder: Recorder,
        tmp_path: Path) -> None:
    agent = open_agent(objects, settings, recorder, slots=1)
    try:
        lease(agent, request("sleep 30", 0, "first"),
              request(f"touch {tmp_path / 'ran'}", 0, "second"))
        agent.cancel([AttemptKey(JOB, "second", 0, 1)])
        outcome = recorder.wait(1)[2]
        agent.cancel([AttemptKey(JOB, "first", 0, 1)])
        recorder.wait(2)
    finally:
        agent.shutdown()
    assert (outcome.error_code, outcome.exit_code) == (ErrorCode.STOPPED, None)
    assert outcome.program_started_at is None
    assert log(objects, "stderr", task="second") == (
        "batchyard: stopped before the program started\n")
    assert not (tmp_path / "ran").exists()


def test_detached_processes_do_not_outlive_their_attempt(agent: LocalAgent,
                                                         recorder: Recorder) -> None:
    number = marker()
    lease(agent, request(f"setsid sleep {number} & (setsid sleep {number + 1} &); "
                         f"sleep {number + 2} & sleep 0.3"))
    assert recorder.wait(1)[1].succeeded
    assert until(lambda: not any(processes_running(f"sleep {number + n}") for n in range(3)),
                 10)


def test_heartbeats_list_the_running_tokens(objects: FsspecObjectStore,
                                            settings: RunnerSettings,
                                            recorder: Recorder) -> None:
    agent = open_agent(objects, settings, recorder, heartbeat=0.05)
    try:
        lease(agent, request("sleep 30", 0), request("sleep 30", 1), first=41)
        assert until(lambda: [41, 42] in recorder.beats, 10), recorder.beats
        agent.cancel([AttemptKey(JOB, "t", 0, 1)])
        recorder.wait(1)
        count = len(recorder.beats)
        assert until(lambda: len(recorder.beats) > count + 1, 10)
        assert recorder.beats[-1] == [42]
    finally:
        agent.shutdown()


def test_an_agent_with_a_heartbeat_of_zero_never_heartbeats(
        objects: FsspecObjectStore, settings: RunnerSettings, recorder: Recorder) -> None:
    agent = open_agent(objects, settings, recorder, heartbeat=0)
    try:
        lease(agent, request("sleep 0.3"))
        assert recorder.wait(1)[1].succeeded
    finally:
        agent.shutdown()
    assert recorder.beats == []


def test_shutdown_kills_everything_and_reports_it(objects: FsspecObjectStore,
                                                  settings: RunnerSettings,
                                                  recorder: Recorder) -> None:
    number = marker()
    agent = open_agent(objects, settings, recorder, slots=2)
    lease(agent, *(request(f"sleep {number + 2 * n} & sleep {number + 2 * n + 1}", 0, f"t{n}")
                   for n in range(3)))
    assert until(lambda: processes_running(f"sleep {number + 1}")
                 and processes_running(f"sleep {number + 3}"), 10)
    agent.shutdown()
    outcomes = recorder.wait(3, timeout=0)
    assert {outcome.error_code for outcome in outcomes.values()} == {ErrorCode.STOPPED}
    assert not any(processes_running(f"sleep {number + n}") for n in range(6))


def test_live_logs_are_shipped_while_a_fast_attempt_runs(agent: LocalAgent,
                                                         recorder: Recorder,
                                                         objects: FsspecObjectStore) -> None:
    lease(agent, request("echo early; sleep 30"))
    url = f"{LOGS}stdout.{JOB}.t.0"
    assert until(lambda: objects.exists(url) and objects.read_bytes(url) == b"early\n", 10)
    assert not recorder.reports
    agent.cancel([AttemptKey(JOB, "t", 0, 1)])
    recorder.wait(1)


def test_fast_and_heavy_attempts_in_one_batch(agent: LocalAgent, recorder: Recorder,
                                              objects: FsspecObjectStore) -> None:
    upload_package(objects, "oss://bkt/app/app.tar.gz",
                   {"main.sh": "echo from-package $GREETING\n"})
    lease(agent, request("echo plain", 0, "fast"),
          request("bash main.sh", 0, "heavy", package="oss://bkt/app/app.tar.gz"),
          request("bash main.sh", 0, "missing", package="oss://bkt/app/none.tar.gz"))
    outcomes = recorder.wait(3)
    assert outcomes[1].succeeded and outcomes[2].succeeded, outcomes
    assert log(objects, "stdout", task="fast") == "plain\n"
    assert log(objects, "stdout", task="heavy") == "from-package hello\n"
    assert outcomes[3].error_code is ErrorCode.PACKAGE


def test_each_attempt_says_when_its_program_started(agent: LocalAgent, recorder: Recorder,
                                                    objects: FsspecObjectStore) -> None:
    """The fast path (a plain command, spawned by the loop) and the heavy one (a package,
    run by `run_attempt`) both report their program's start, between the attempt's start
    and end, and no later than the program's own clock; a program never started, none."""
    upload_package(objects, "oss://bkt/app/clock.tar.gz", {"main.sh": "date +%s.%N\n"})
    lease(agent, request("date +%s.%N", 0, "fast"),
          request("bash main.sh", 0, "heavy", package="oss://bkt/app/clock.tar.gz"),
          request("date +%s.%N", 0, "missing", package="oss://bkt/app/none.tar.gz"))
    outcomes = recorder.wait(3)
    for token, task in ((1, "fast"), (2, "heavy")):
        outcome = outcomes[token]
        assert outcome.succeeded, outcome
        assert outcome.started_at and outcome.program_started_at and outcome.ended_at
        clock = datetime.fromtimestamp(float(log(objects, "stdout", task=task)), UTC)
        assert outcome.started_at <= outcome.program_started_at <= clock <= outcome.ended_at
    assert outcomes[3].error_code is ErrorCode.PACKAGE
    assert outcomes[3].started_at is not None and outcomes[3].program_started_at is None


class FarStore(FsspecObjectStore):
    """A real store whose buckets say they are not local folders (as S3 buckets say), and
    which notes the threads that upload."""

    uploaders: set[str]

    def bucket_folder(self, bucket: str, create: bool = False) -> str | None:
        return None

    def put_file(self, local: Path, url: str, handed_over: bool = False) -> None:
        self.uploaders.add(threading.current_thread().name)
        super().put_file(local, url, handed_over)


def test_logs_bound_for_a_remote_store_are_uploaded_by_finishers(
        tmp_path: Path, settings: RunnerSettings, recorder: Recorder) -> None:
    objects = FarStore(tmp_path / "objects")
    objects.uploaders = set()
    agent = open_agent(objects, settings, recorder)
    try:
        lease(agent, *(request(f"echo {n}", 0, f"t{n}") for n in range(6)))
        outcomes = recorder.wait(6)
    finally:
        agent.shutdown()
    assert all(outcome.succeeded for outcome in outcomes.values())
    assert [log(objects, "stdout", task=f"t{n}") for n in range(6)] == [f"{n}\n"
                                                                         for n in range(6)]
    assert objects.uploaders and all(name.startswith("batchyard-finisher-")
                                     for name in objects.uploaders), objects.uploaders


def test_forget_removes_the_jobs_work_folders(agent: LocalAgent, recorder: Recorder,
                                              settings: RunnerSettings) -> None:
    lease(agent, request("exit 1"))
    recorder.wait(1)
    assert (settings.work_root / JOB).is_dir()
    agent.forget(JOB)
    assert not (settings.work_root / JOB).exists()


# ---- slots with a cgroup: the fast path, the program born in its cgroup --------------------


@pytest.fixture(params=[1, 2], ids=["v1", "v2"])
def cgroup_settings(request: pytest.FixtureRequest, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> RunnerSettings:
    """Settings whose slots get cgroups of the version asked for (skipped where this
    process may not make them)."""
    version: int = request.param
    settings = RunnerSettings(work_root=tmp_path / "work", kill_grace=0.5, log_interval=0.2,
                              confinement=Confinement(tracking="cgroup"))
    found = cgroups.available(settings.work_root)
    if found is not None:
        found.remove()
    if found is None or found.version != version:
        groups = Cgroups([writable_hierarchy(version)], f"test-{os.getpid()}-{version}")
        monkeypatch.setattr(cgroups, "available", lambda *_, **__: groups)
    return settings


@pytest.fixture
def heavy(monkeypatch: pytest.MonkeyPatch) -> list[AttemptKey]:
    """The attempts that went down the heavy path (`run_attempt`, replaced: it fails them)."""
    taken: list[AttemptKey] = []

    def run_attempt(request: AttemptRequest, *_: object) -> Outcome:
        taken.append(request.key)
        return broken(RuntimeError("the heavy path was taken"), datetime.now(UTC))

    monkeypatch.setattr(agent_module, "run_attempt", run_attempt)
    return taken


@pytest.fixture
def cgroup_agent(objects: FsspecObjectStore, cgroup_settings: RunnerSettings,
                 recorder: Recorder) -> Iterator[LocalAgent]:
    running = open_agent(objects, cgroup_settings, recorder)
    assert running.tracking == "cgroup"
    yield running
    running.shutdown()


def slot_cgroups_of_threads() -> list[str]:
    """The cgroup lines of this process's threads that name a slot (none should)."""
    lines = []
    for task in Path("/proc/self/task").iterdir():
        with open(task / "cgroup") as membership:
            lines += [line for line in membership if "/slot-" in line]
    return lines


def test_a_plain_attempt_in_a_cgroup_slot_runs_on_the_fast_path_inside_its_cgroup(
        cgroup_agent: LocalAgent, recorder: Recorder, objects: FsspecObjectStore,
        heavy: list[AttemptKey]) -> None:
    lease(cgroup_agent, *(request("cat /proc/self/cgroup", instance) for instance in range(6)))
    outcomes = recorder.wait(6)
    assert heavy == []
    assert all(outcome.succeeded for outcome in outcomes.values()), outcomes
    slot = re.compile(r"^\d+:(pids|memory|):/(.*/)?batchyard-[\w-]+/slot-\d+$", re.M)
    for instance in range(6):  # its first command already runs in the slot's cgroup
        assert slot.search(log(objects, "stdout", instance)), log(objects, "stdout", instance)
    assert slot_cgroups_of_threads() == []  # the spawner stepped out of every slot


def test_a_detached_process_in_a_cgroup_slot_dies_with_its_attempt(
        cgroup_agent: LocalAgent, recorder: Recorder, heavy: list[AttemptKey]) -> None:
    number = marker()
    lease(cgroup_agent, request(f"setsid sleep {number} & (setsid sleep {number + 1} &); "
                                "sleep 0.3"))
    assert recorder.wait(1)[1].succeeded
    assert heavy == []
    assert not processes_running(f"sleep {number}")
    assert not processes_running(f"sleep {number + 1}")


def test_a_timeout_kills_the_whole_cgroup(cgroup_agent: LocalAgent, recorder: Recorder,
                                          heavy: list[AttemptKey]) -> None:
    number = marker()
    lease(cgroup_agent, request(f"setsid sleep {number} & sleep {number + 1}", 0, "a",
                                timeout=1),
          request(f"trap '' TERM; setsid sleep {number + 2} & sleep {number + 3}", 0, "b",
                  timeout=1))
    outcomes = recorder.wait(2)
    assert heavy == []
    assert (outcomes[1].error_code, outcomes[1].exit_code) == (ErrorCode.TIMEOUT, 143)
    assert (outcomes[2].error_code, outcomes[2].exit_code) == (ErrorCode.TIMEOUT, 137)
    assert not any(processes_running(f"sleep {number + n}") for n in range(4))


def test_a_cancel_kills_the_whole_cgroup(cgroup_agent: LocalAgent, recorder: Recorder,
                                         heavy: list[AttemptKey]) -> None:
    number = marker()
    lease(cgroup_agent, request(f"setsid sleep {number} & sleep {number + 1}"))
    assert until(lambda: processes_running(f"sleep {number}")
                 and processes_running(f"sleep {number + 1}"), 10)
    cgroup_agent.cancel([AttemptKey(JOB, "t", 0, 1)])
    outcome = recorder.wait(1)[1]
    assert heavy == []
    assert (outcome.error_code, outcome.exit_code) == (ErrorCode.STOPPED, 137)
    assert not processes_running(f"sleep {number}")
    assert not processes_running(f"sleep {number + 1}")


def test_slots_with_limits_keep_the_heavy_path(objects: FsspecObjectStore, tmp_path: Path,
                                               recorder: Recorder,
                                               heavy: list[AttemptKey]) -> None:
    """A memory limit (and a user, as root) comes with the sandbox: `run_attempt` places the
    program under them and judges MemoryLimitExceeded (tests/security/test_limits.py)."""
    confinement = Confinement(sandbox=True, limits=Limits(memory_bytes=64 << 20))
    settings = RunnerSettings(work_root=tmp_path / "work", confinement=confinement)
    agent = open_agent(objects, settings, recorder)
    try:
        lease(agent, request("true"))
        recorder.wait(1)
    finally:
        agent.shutdown()
    assert heavy == [AttemptKey(JOB, "t", 0, 1)]


def test_an_agent_hosting_vms_runs_one_attempt_per_vm_at_a_time(
        objects: FsspecObjectStore, settings: RunnerSettings, recorder: Recorder) -> None:
    """A provider's agent (`hosts_only_vms`): the engine may queue a VM's short attempts on
    it; they run one after the other, each VM apart, and a queued one cancelled never runs."""
    info = AgentInfo("node-1", slots=8, heartbeat=2.0, hosts_only_vms=True)
    agent = LocalAgent(info, objects, settings, recorder).start()
    try:
        sleepy = [replace(request("sleep 0.3", instance), worker_id="vm-1")
                  for instance in range(3)]
        other = replace(request("sleep 0.3", 3), worker_id="vm-2")
        dropped = replace(request("sleep 0.3", 4), worker_id="vm-1")
        lease(agent, *sleepy, other, dropped)
        agent.cancel([dropped.key])
        outcomes = recorder.wait(5)
    finally:
        agent.shutdown()
    spans = {token: (outcome.started_at, outcome.ended_at) for token, outcome in outcomes.items()}
    on_vm1 = sorted(spans[token] for token in (1, 2, 3))
    assert all(outcomes[token].succeeded for token in (1, 2, 3, 4))
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(on_vm1))
    assert spans[4][0] < on_vm1[0][1]  # vm-2's ran beside vm-1's first
    assert outcomes[5].error_code is ErrorCode.STOPPED
    assert "before the program started" in outcomes[5].error_message
