"""The agent process beside `batchyard serve`: real children, real programs, real signals.

The agent in the child is `shell_agent.ShellAgent` (a small real agent: `bash -c` per lease
in its own session); the transport around it is what is tested.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from batchyard.adapters.store import SqlStore
from batchyard.agent import wire
from batchyard.agent.process import COMMAND, AgentGone, AgentProcess, exit_status
from batchyard.domain.attempt import AttemptKey, AttemptRequest
from batchyard.domain.outcome import ErrorCode, Outcome
from batchyard.hosting import open_objects
from batchyard.orchestrator.engine import Engine
from batchyard.ports.agents import Agent, AgentInfo, AgentListener, LeaseBatch, Report, batch_of
from batchyard.settings import Settings
from tests.integration.conftest import make_job, make_task

ROOT = Path(__file__).resolve().parents[2]
FACTORY = "tests.integration.shell_agent:shell_agent"
INFO = AgentInfo("agent-1", slots=4, heartbeat=0.1)


class Recorder:
    """The engine's listener: records every call; `wait` until a condition holds."""

    def __init__(self) -> None:
        self.reports: list[list[Report]] = []
        self.names: set[str] = set()
        self.heartbeats: list[tuple[int, ...]] = []
        self.goodbyes: list[tuple[str, float]] = []
        self.on_gone: Callable[[], None] = lambda: None
        self._changed = threading.Condition()

    def reported(self, agent_id: str, reports: Sequence[Report]) -> None:
        with self._changed:
            self.names.add(agent_id)
            self.reports.append(list(reports))
            self._changed.notify_all()

    def heartbeat(self, agent_id: str, running: Sequence[int]) -> None:
        with self._changed:
            self.heartbeats.append(tuple(running))
            self._changed.notify_all()

    def gone(self, agent_id: str, reason: str) -> None:
        with self._changed:
            self.goodbyes.append((reason, time.monotonic()))
            self._changed.notify_all()
        self.on_gone()

    def wait(self, condition: Callable[[], object], timeout: float = 10.0) -> None:
        with self._changed:
            assert self._changed.wait_for(condition, timeout), "timed out"


def requests(*commands: str, task: str = "task", token: int = 1,
             ) -> list[tuple[int, AttemptRequest]]:
    """One request per command, each of its own task (a task's instances share a command)."""
    return [(token + index, AttemptRequest(AttemptKey("job-1", f"{task}{index}", 0, 1), 1,
                                           command, "", {}, 0, "", ""))
            for index, command in enumerate(commands)]


def batch(*commands: str, token: int = 1) -> LeaseBatch:
    return batch_of(requests(*commands, token=token))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def started_program(pid_file: Path) -> int:
    """The pid a program wrote (`echo $$ > file`) once it started."""
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
    return int(pid_file.read_text())


@pytest.fixture(autouse=True)
def importable_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """The child imports the test agent as `tests.integration.shell_agent`."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))


@pytest.fixture
def work_root(tmp_path: Path) -> Path:
    return tmp_path / "work"


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def agent(recorder: Recorder, work_root: Path) -> Iterator[AgentProcess]:
    process = AgentProcess(INFO, recorder, wire.AgentFactory(FACTORY, (str(work_root),)),
                           work_root=work_root)
    try:
        yield process.start()
    finally:
        process.shutdown()


def test_leases_go_in_and_reports_come_back_in_batches(agent: AgentProcess,
                                                       recorder: Recorder) -> None:
    first = batch_of(requests("exit 0", "exit 3") + requests("true", task="other", token=3))
    assert len(first.parts) == 3

    agent.lease(first)
    recorder.wait(lambda: recorder.reports)
    [reports] = recorder.reports
    assert sorted((report.token, report.outcome.exit_code) for report in reports) == [
        (1, 0), (2, 3), (3, 0)]
    assert {report.key for report in reports} == {first.key(lease) for lease in first.leases}

    agent.lease(batch("exit 7", token=10))
    recorder.wait(lambda: len(recorder.reports) == 2)
    assert [(report.token, report.outcome.exit_code) for report in recorder.reports[1]] == [
        (10, 7)]
    assert agent.info() == INFO


def test_the_agent_is_known_by_the_engine_s_name_whatever_it_calls_itself(
        recorder: Recorder, work_root: Path) -> None:
    renamed = wire.AgentFactory("tests.integration.shell_agent:renamed", (str(work_root),))
    agent = AgentProcess(INFO, recorder, renamed)
    try:
        assert agent.start().info() == replace(INFO, slots=1)
        agent.lease(batch("true"))
        recorder.wait(lambda: recorder.reports)
        assert recorder.names == {INFO.id}
    finally:
        agent.shutdown()


def test_the_engine_hears_a_first_heartbeat_before_start_returns(
        recorder: Recorder, work_root: Path) -> None:
    quiet = AgentInfo("agent-1", slots=1, heartbeat=3600)  # the agent's own: not before long
    agent = AgentProcess(quiet, recorder, wire.AgentFactory(FACTORY, (str(work_root),)))
    try:
        agent.start()
        assert recorder.heartbeats == [()]  # `Ready`: alive, nothing running
        assert 0 < agent.ready_after < 30
    finally:
        agent.shutdown()


def test_heartbeats_list_what_runs_and_a_cancel_reports_stopped(agent: AgentProcess,
                                                                recorder: Recorder) -> None:
    agent.lease(batch("sleep 1000", token=7))
    recorder.wait(lambda: (7,) in recorder.heartbeats)

    agent.cancel([AttemptKey("job-1", "task0", 0, 1)])
    recorder.wait(lambda: recorder.reports)
    [[report]] = recorder.reports
    assert (report.token, report.outcome.error_code) == (7, ErrorCode.STOPPED)
    count = len(recorder.heartbeats)
    recorder.wait(lambda: len(recorder.heartbeats) > count)
    assert recorder.heartbeats[-1] == ()


def test_programs_do_not_inherit_the_channel(agent: AgentProcess, recorder: Recorder,
                                             tmp_path: Path) -> None:
    listing = tmp_path / "fds"
    agent.lease(batch(f"for fd in /proc/$$/fd/*; do readlink $fd; done > {listing}"))
    recorder.wait(lambda: recorder.reports)
    assert listing.read_text().strip() != ""
    assert "socket:" not in listing.read_text()


def test_kill_9_reports_gone_once_and_a_restart_leaves_no_orphan(
        agent: AgentProcess, recorder: Recorder, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    agent.lease(batch(f"echo $$ > {pid_file}; exec sleep 1000"))
    program = started_program(pid_file)
    child = agent.pid
    assert child is not None

    os.kill(child, signal.SIGKILL)
    killed_at = time.monotonic()
    recorder.wait(lambda: recorder.goodbyes)
    [(reason, at)] = recorder.goodbyes
    assert at - killed_at < 1.0
    assert reason == f"(process {child}) was killed by signal SIGKILL"
    assert alive(program)  # its own session outlived the agent process
    agent.lease(batch("true", token=2))  # dropped: `gone` counts it lost

    agent.restart()
    assert agent.pid != child
    wait_until(lambda: not alive(program))
    agent.lease(batch("exit 5", token=3))
    recorder.wait(lambda: recorder.reports)
    assert [[report.token for report in reports] for reports in recorder.reports] == [[3]]
    agent.shutdown()
    assert len(recorder.goodbyes) == 1


def test_sigterm_stops_the_child_which_reports_what_it_killed(
        agent: AgentProcess, recorder: Recorder, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    agent.lease(batch(f"echo $$ > {pid_file}; exec sleep 1000", token=5))
    program = started_program(pid_file)
    child = agent.pid
    assert child is not None

    os.kill(child, signal.SIGTERM)
    recorder.wait(lambda: recorder.goodbyes)
    assert [(report.token, report.outcome.error_code) for report in recorder.reports[0]] == [
        (5, ErrorCode.STOPPED)]  # delivered before `gone`
    assert recorder.goodbyes[0][0] == f"(process {child}) exited with status 0"
    assert not alive(program)


def test_a_child_restarted_from_gone_outlives_the_thread_that_started_it(
        agent: AgentProcess, recorder: Recorder) -> None:
    """The kernel sends PR_SET_PDEATHSIG when the engine's *thread* that started the child
    ends (here: the old reader, which calls `gone`); the child stops only if the engine died."""
    recorder.on_gone = agent.restart
    old = agent.pid
    assert old is not None
    os.kill(old, signal.SIGKILL)
    recorder.wait(lambda: recorder.goodbyes)
    wait_until(lambda: agent.pid != old and not any(
        thread.name.endswith(f"-{old}") for thread in threading.enumerate()))

    agent.lease(batch("exit 4", token=9))
    recorder.wait(lambda: recorder.reports)
    assert [report.outcome.exit_code for report in recorder.reports[0]] == [4]
    assert len(recorder.goodbyes) == 1
    assert agent.pid is not None and alive(agent.pid)


class Restarting:
    """The engine's listener, restarting the agent process when it is gone."""

    def __init__(self, engine: AgentListener) -> None:
        self.engine = engine
        self.agent: AgentProcess | None = None
        self.reasons: list[str] = []

    def reported(self, agent_id: str, reports: Sequence[Report]) -> None:
        self.engine.reported(agent_id, reports)

    def heartbeat(self, agent_id: str, running: Sequence[int]) -> None:
        self.engine.heartbeat(agent_id, running)

    def gone(self, agent_id: str, reason: str) -> None:
        self.reasons.append(reason)
        self.engine.gone(agent_id, reason)
        assert self.agent is not None
        self.agent.restart()


@pytest.mark.slow
def test_the_engine_reruns_once_what_a_killed_agent_process_ran(tmp_path: Path) -> None:
    """The real engine and runner: two instances run in the agent process, which is killed
    with `kill -9`; each is re-run exactly once on the restarted one, the third runs there,
    and no program of the killed one is left."""
    settings = Settings(data_dir=tmp_path / "data", slots=2)
    runs, pids = tmp_path / "runs", tmp_path / "pids"
    command = (f"echo $BATCH_COMPUTE_DAG_INSTANCE_ID.$BATCH_COMPUTE_DAG_ATTEMPT >> {runs}; "
               f"if [ $BATCH_COMPUTE_DAG_ATTEMPT = 1 ] && [ $BATCH_COMPUTE_DAG_INSTANCE_ID != 2 ]; "
               f"then echo $$ >> {pids}; exec sleep 1000; fi")
    listener: Restarting | None = None

    def agents(engine: AgentListener) -> list[Agent]:
        nonlocal listener
        listener = Restarting(engine)
        factory = wire.AgentFactory("batchyard.hosting:hosted_agent", (settings, False))
        listener.agent = AgentProcess(AgentInfo("process-1", 2), listener, factory,
                                      work_root=settings.work_root).start()
        return [listener.agent]

    store = SqlStore(settings.resolved_database_url)
    engine = Engine(store, open_objects(settings), agents, closers=(store.claim(),)).start()
    try:
        job = engine.submit(make_job({"a": make_task(command, count=3)}))
        wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2)
        assert listener is not None and listener.agent is not None
        first = [int(pid) for pid in pids.read_text().split()]
        os.kill(listener.agent.pid or 0, signal.SIGKILL)
        assert engine.wait(job, timeout=60).state == "Finished"
    finally:
        engine.close()
    assert sorted(runs.read_text().split()) == ["0.1", "0.2", "1.1", "1.2", "2.1"]
    assert len(listener.reasons) == 1 and "SIGKILL" in listener.reasons[0]
    assert not any(alive(pid) for pid in first)


ENGINE = """
import os, sys, time
from pathlib import Path
from batchyard.agent.process import AgentProcess
from batchyard.agent.wire import AgentFactory
from batchyard.ports.agents import AgentInfo
from tests.integration.test_agent_process import batch, FACTORY, Recorder

work, pid_file, hold = sys.argv[1], sys.argv[2], sys.argv[3] == "hold"
agent = AgentProcess(AgentInfo("a", 1), Recorder(), AgentFactory(FACTORY, (work,)),
                     work_root=Path(work)).start()
holder = os.fork() if hold else 0  # a copy of the engine holding the channel open
if hold and holder == 0:
    time.sleep(60)
    os._exit(0)
agent.lease(batch(f"echo $$ > {pid_file}; exec sleep 1000"))
print(agent.pid, holder, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("channel", ["closes", "hold"])
def test_when_the_engine_dies_the_child_and_its_programs_die(
        channel: str, work_root: Path, tmp_path: Path) -> None:
    """Closing the channel is the first guard; PR_SET_PDEATHSIG the second (`hold`: a
    forked copy of the engine keeps the channel open, so only the signal stops the child)."""
    pid_file = tmp_path / "pid"
    engine = subprocess.Popen([sys.executable, "-c", ENGINE, str(work_root), str(pid_file),
                               channel], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert engine.stdout is not None
    child, holder = map(int, engine.stdout.readline().split())
    try:
        program = started_program(pid_file)
        engine.kill()
        engine.wait()
        wait_until(lambda: not alive(child) and not alive(program))
    finally:
        engine.kill()
        if holder:
            os.kill(holder, signal.SIGKILL)


def test_a_child_whose_channel_closes_kills_its_programs_and_exits(
        work_root: Path, tmp_path: Path) -> None:
    """The engine alive but its end closed (no PR_SET_PDEATHSIG involved)."""
    ours, theirs = socket.socketpair()
    child = subprocess.Popen([*COMMAND, str(theirs.fileno()), str(os.getpid())],
                             pass_fds=(theirs.fileno(),))
    theirs.close()
    pid_file = tmp_path / "pid"
    factory = wire.AgentFactory(FACTORY, (str(work_root),))
    ours.sendall(wire.encode(wire.Start(INFO, factory, str(work_root))))
    ours.sendall(wire.encode(batch(f"echo $$ > {pid_file}; exec sleep 1000")))
    program = started_program(pid_file)

    ours.close()
    assert child.wait(timeout=10) == 0
    wait_until(lambda: not alive(program))


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


def framed(message: object) -> bytes:
    payload = pickle.dumps(message)
    return struct.pack(">I", len(payload)) + payload


ROGUE = """
import socket, sys, time
from batchyard.adapters.store import SqlStore
from batchyard.agent import wire
from batchyard.ports.agents import AgentInfo
sock = socket.socket(fileno=int(sys.argv[2]))
sock.sendall(wire.encode(wire.Ready(AgentInfo("agent-1", 1))))
sock.sendall(bytes.fromhex(sys.argv[1]))
time.sleep(60)
"""


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize(("frame", "error"), [
    (lambda _: struct.pack(">I", 2**32 - 1),
     "a frame announcing 4294967295 bytes, over the channel's bound of 67108864 bytes"),
    (lambda _: struct.pack(">I", 5) + b"\x80junk", "a frame that is not a readable pickle"),
    (lambda marker: framed(Exploit(marker)),
     "naming posix.system, which is not part of the agent protocol"),
    (lambda _: framed(batch("true")),
     "a frame holding a LeaseBatch, not a message an agent sends"),
], ids=["oversized", "garbage", "code", "wrong-direction"])
def test_a_refused_frame_ends_the_child_not_the_engine(
        frame: Callable[[Path], bytes], error: str, recorder: Recorder, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    rogue = AgentProcess(INFO, recorder, wire.AgentFactory(FACTORY),
                         command=(sys.executable, "-c", ROGUE, frame(marker).hex())).start()
    recorder.wait(lambda: recorder.goodbyes)
    [(reason, _)] = recorder.goodbyes
    assert error in reason
    assert reason.startswith(f"(process {rogue.pid}) sent ")
    assert reason.endswith("refused; then it was killed by signal SIGKILL")
    assert rogue.pid is not None and not alive(rogue.pid)
    assert not marker.exists()


def test_what_the_engine_sends_is_bounded_before_it_is_written() -> None:
    with pytest.raises(wire.ChannelError, match="exceeds the channel's bound of 100 bytes: "
                                                "send smaller batches"):
        wire.encode(batch("true", "true", "true"), limit=100)


def test_frames_larger_than_the_socket_buffer_are_reassembled() -> None:
    ours, theirs = socket.socketpair()
    big = wire.Reported(tuple(Report(AttemptKey("job-1", "t", index, 1), index, Outcome(0))
                              for index in range(20_000)))
    stream = wire.encode(big) + wire.encode(wire.Heartbeat((1, 2)))
    assert len(stream) > 4 * ours.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    writer = threading.Thread(target=theirs.sendall, args=(stream,))
    writer.start()
    reader, received = wire.FrameReader(ours), []
    while len(received) < 2:
        assert reader.fill()
        while (payload := reader.frame()) is not None:
            received.append(wire.from_agent(payload))
    writer.join()
    assert received == [big, wire.Heartbeat((1, 2))]
    ours.close()
    theirs.close()


def test_adjacent_reports_leave_as_one_message_in_order() -> None:
    first, second, third = (Report(AttemptKey("job-1", "t", index, 1), index, Outcome(0))
                            for index in range(3))
    beat = wire.Heartbeat((2,))
    messages = [wire.Reported((first,)), wire.Reported((second,)), beat,
                wire.Reported((third,))]
    assert list(wire.coalesced(messages)) == [wire.Reported((first, second)), beat,
                                              wire.Reported((third,))]
    many = [wire.Reported((first,))] * (wire.MOST_REPORTS + 1)
    sizes = [len(message.reports) for message in wire.coalesced(many)
             if isinstance(message, wire.Reported)]
    assert sizes == [wire.MOST_REPORTS, 1]


def test_a_child_that_cannot_build_its_agent_fails_start(recorder: Recorder) -> None:
    broken = AgentProcess(INFO, recorder, wire.AgentFactory("tests.integration.nowhere:agent"))
    ended = r"agent agent-1 \(process \d+\) exited with status 1 before it was ready"
    with pytest.raises(AgentGone, match=ended):
        broken.start()
    assert recorder.goodbyes == []


def test_exit_status_in_words() -> None:
    assert exit_status(-signal.SIGKILL) == "was killed by signal SIGKILL"
    assert exit_status(3) == "exited with status 3"


def test_reports_sent_close_together_leave_in_one_message() -> None:
    """The agent's writer waits REPORT_LINGER after a report, so that the reports of the
    next moments share its frame (one pickle and one read on each end, not one each)."""
    from batchyard.agent.process import _Channel

    ours, theirs = socket.socketpair()
    channel = _Channel(theirs)
    try:
        outcome = Outcome(0)
        for index in range(3):
            channel.send(wire.Reported((Report(AttemptKey("job-1", "t", index, 1), index,
                                               outcome),)))
        channel.send(wire.Heartbeat((7,)))
        reader = wire.FrameReader(ours)
        messages = []
        while len(messages) < 2:
            payload = reader.frame()
            if payload is None:
                assert reader.fill()
                continue
            messages.append(wire.from_agent(payload))
        reported, heartbeat = messages
        assert isinstance(reported, wire.Reported)
        assert [report.key.instance_id for report in reported.reports] == [0, 1, 2]
        assert heartbeat == wire.Heartbeat((7,))
    finally:
        channel.close()
        ours.close()
