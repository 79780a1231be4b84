"""How the agent's spawner loop starts programs: posix_spawn through ctypes (`agent.native`),
and the fallbacks where the C library lacks what it needs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.agent import native, spawner
from batchyard.domain.outcome import ErrorCode
from batchyard.ports.agents import batch_of
from tests.integration.test_agent import (
    Recorder,
    lease,
    log,
    open_agent,
    request,
    settings_in,
)

pytestmark = pytest.mark.skipif(native.available() is None,
                                reason="the C library lacks posix_spawn_file_actions_addchdir_np")

FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


@pytest.fixture
def objects(tmp_path: Path) -> FsspecObjectStore:
    return FsspecObjectStore(tmp_path / "objects")


def spawn(folder: Path, program: str, argv: list[str], environment: dict[str, str]) -> int:
    """Spawn in `folder/workdir`, logs in `folder/stdout` and `folder/stderr`."""
    spawn = native.available()
    assert spawn is not None
    try:
        return spawn.spawn(program, argv, environment, str(folder), FLAGS)
    finally:
        spawn.close()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An attempt folder, as `runner.workspace` makes it."""
    (tmp_path / "attempt" / "workdir").mkdir(parents=True)
    return tmp_path / "attempt"


def test_a_native_spawn_runs_in_its_workdir_in_a_session_of_its_own(folder: Path) -> None:
    pid = spawn(folder, "/bin/sh", ["sh", "-c", 'pwd; echo "$A"; ps -o sid= -p $$; '
                                    "ls /proc/self/fd; cat; echo err >&2"],
                {"A": "é b", "PATH": "/usr/bin:/bin"})
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    lines = (folder / "stdout").read_text().split("\n")
    assert [line.strip() for line in lines[:3]] == [str(folder / "workdir"), "é b", str(pid)]
    assert lines[3:] == ["0", "1", "2", "3", ""]  # 3: the listing's own; stdin is empty
    assert (folder / "stderr").read_text() == "err\n"


def test_spawns_one_after_the_other_reuse_what_they_prepared(tmp_path: Path) -> None:
    """Prepared file actions are kept per descriptor number: each spawn still lands in its
    own folder, whatever number its folder was opened at."""
    spawner = native.available()
    assert spawner is not None
    held = []
    try:
        for n in range(6):
            folder = tmp_path / str(n)
            (folder / "workdir").mkdir(parents=True)
            pid = spawner.spawn("/bin/sh", ["sh", "-c", "pwd"], {}, str(folder), FLAGS)
            os.waitpid(pid, 0)
            assert (folder / "stdout").read_text() == f"{folder / 'workdir'}\n"
            held.append(os.open(os.devnull, os.O_RDONLY))  # the next folder: another number
    finally:
        spawner.close()
        for descriptor in held:
            os.close(descriptor)


def test_each_spawn_gets_its_own_environment(folder: Path) -> None:
    """The last spawn's environment stays packed and only changed values are encoded again:
    each program still sees exactly its own."""
    spawner = native.available()
    assert spawner is not None
    environments = [{"A": "1", "B": "same"}, {"A": "2", "B": "same"}, {"A": "2", "B": "é"},
                    {"B": "é", "A": "3"}, {"A": "4"}, {"A": "5", "C": ""}]
    try:
        for environment in environments:
            pid = spawner.spawn("/usr/bin/env", ["env"], environment, str(folder), FLAGS)
            os.waitpid(pid, 0)
            assert (folder / "stdout").read_text() == "".join(
                f"{name}={value}\n" for name, value in environment.items())
        with pytest.raises(ValueError, match="embedded null byte"):
            spawner.spawn("/usr/bin/env", ["env"], {"A": "6\0", "C": ""}, str(folder), FLAGS)
        with pytest.raises(ValueError, match="illegal environment variable name"):
            spawner.spawn("/usr/bin/env", ["env"], {"A": "6", "C=": ""}, str(folder), FLAGS)
        pid = spawner.spawn("/usr/bin/env", ["env"], {"A": "7", "C": ""}, str(folder), FLAGS)
        os.waitpid(pid, 0)
        assert (folder / "stdout").read_text() == "A=7\nC=\n"
    finally:
        spawner.close()


@pytest.mark.parametrize(("program", "missing"), [
    ("/nonexistent/sh", ""),
    ("/bin/sh", "workdir"),
    ("/bin/sh", "folder"),
    ("/etc/passwd", ""),
])
def test_a_failed_native_spawn_names_what_was_wrong(folder: Path, program: str,
                                                    missing: str) -> None:
    if missing == "workdir":
        (folder / "workdir").rmdir()
    elif missing == "folder":
        folder = folder.parent / "missing"
    with pytest.raises(OSError) as raised:
        spawn(folder, program, ["sh", "-c", "true"], {})
    assert raised.value.filename == (str(folder / "workdir") if missing else program)


@pytest.mark.parametrize(("argv", "environment", "message"), [
    (["sh", "-c", "a\0b"], {}, "embedded null byte"),
    (["sh"], {"A": "x\0y"}, "embedded null byte"),
    (["sh"], {"A=B": "x"}, "illegal environment variable name"),
    (["sh"], {"": "x"}, "illegal environment variable name"),
])
def test_a_native_spawn_refuses_what_os_posix_spawn_refuses(
        folder: Path, argv: list[str], environment: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spawn(folder, "/bin/sh", argv, environment)


def test_a_native_spawn_lets_go_of_the_gil(tmp_path: Path) -> None:
    """The child blocks opening its stdout (a FIFO) until another Python thread opens the
    other end: with the GIL held through the spawn (as `os.posix_spawn` does), that thread
    could never run and the spawn would never return."""
    script = textwrap.dedent(f"""
        import os, threading, time
        from batchyard.agent import native
        folder = {str(tmp_path)!r}
        os.mkdir(folder + "/workdir")
        open(folder + "/stderr", "w").close()
        fifo = folder + "/stdout"
        os.mkfifo(fifo)
        def reader():
            time.sleep(0.3)  # needs the GIL back to go on
            os.close(os.open(fifo, os.O_RDONLY))
        threading.Thread(target=reader).start()
        pid = native.available().spawn("/bin/true", ["true"], {{}}, folder, os.O_WRONLY)
        os.waitpid(pid, 0)
        print("spawned")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=20, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.stdout == "spawned\n", done.stderr


# ---- through the agent -------------------------------------------------------------------


def test_programs_get_sigpipe_and_sigxfsz_at_their_default(
        objects: FsspecObjectStore, tmp_path: Path, recorder: Recorder) -> None:
    """Python ignores both; `subprocess.Popen` (the heavy path) restores them, and so does the
    fast path: `yes | head -1` ends `yes` by SIGPIPE, not by a write error."""
    agent = open_agent(objects, settings_in(tmp_path / "work"), recorder)
    try:
        lease(agent, request("yes | head -1; echo ${PIPESTATUS[0]}; "
                             "grep SigIgn /proc/self/status"))
        assert recorder.wait(1)[1].succeeded
    finally:
        agent.shutdown()
    out = log(objects, "stdout").split("\n")
    assert out[:2] == ["y", "141"]
    ignored = int(out[2].split()[1], 16)
    assert not ignored & (1 << (13 - 1) | 1 << (25 - 1))  # SIGPIPE, SIGXFSZ
    assert log(objects, "stderr") == ""


@pytest.mark.parametrize(("changed", "message"), [
    ({"env_vars": {"PATH": "/nonexistent"}}, "No such file or directory: 'bash'"),
    ({"env_vars": {"A": "x\0y"}}, "embedded null byte"),
    ({"command_line": "echo a\0b"}, "embedded null byte"),
])
def test_what_cannot_start_is_a_launch_failure(objects: FsspecObjectStore, tmp_path: Path,
                                               recorder: Recorder, changed: dict[str, object],
                                               message: str) -> None:
    agent = open_agent(objects, settings_in(tmp_path / "work"), recorder)
    try:
        agent.lease(batch_of([(1, replace(request("true"), **changed))]))  # type: ignore[arg-type]
        outcome = recorder.wait(1)[1]
    finally:
        agent.shutdown()
    assert (outcome.exit_code, outcome.error_code) == (None, ErrorCode.LAUNCH)
    assert message in outcome.error_message, outcome.error_message
    assert message in log(objects, "stderr")


@pytest.mark.parametrize("fallback", ["os", "popen"])
def test_without_the_native_spawn_the_fallbacks_run_the_fast_path(
        objects: FsspecObjectStore, tmp_path: Path, recorder: Recorder,
        monkeypatch: pytest.MonkeyPatch, fallback: str) -> None:
    monkeypatch.setattr(native, "available", lambda: None)
    if fallback == "popen":
        monkeypatch.setattr(spawner, "_own_working_directory", lambda: False)
    agent = open_agent(objects, settings_in(tmp_path / "work"), recorder)
    try:
        lease(agent, request('pwd; echo "$GREETING"', 3))
        assert recorder.wait(1)[1].succeeded
    finally:
        agent.shutdown()
    workdir = tmp_path / "work" / "job-00000000000000000000000000000A9E" / "t" / "3.attempt-1"
    assert log(objects, "stdout", 3) == f"{workdir / 'workdir'}\nhello\n"


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
