"""Finding 6: no process outlives its attempt, even one that calls `setsid` (and `env -i`).

Confined attempts (`serve`) run in their own PID namespace; unconfined ones (`batchyard run`)
are tracked by a cgroup where the machine allows it, else as orphans of a child subreaper.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from batchyard.orchestrator.engine import Engine
from batchyard.runner import cgroups
from batchyard.service import open_engine
from batchyard.settings import Settings
from tests.integration.conftest import make_job, make_task
from tests.security.conftest import ServeProcess, job, processes_running, run_job, until

TRACKERS = ["cgroup", "subreaper"]


def detached(marker: int) -> str:
    """A command that leaves two detached sleepers behind (one with a scrubbed environment)."""
    return (f"setsid sleep {marker} & setsid env -i sleep {marker + 1} & "
            f"(setsid sleep {marker + 2} &) ; sleep 0.5; echo started")


def markers() -> int:
    return random.randrange(4_000_000, 5_000_000, 10)


def gone(marker: int) -> bool:
    return not any(processes_running(f"sleep {marker + offset}") for offset in range(3))


@pytest.fixture(params=TRACKERS)
def local_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "cgroup":
        probe = cgroups.available(tmp_path)
        if probe is None:
            pytest.skip("no cgroup this process may manage here")
        probe.remove()
    settings = Settings(data_dir=tmp_path / "data", slots=2, process_tracking=request.param)
    with open_engine(settings) as engine:
        yield engine


def test_served_attempts_leave_nothing_behind(serve: ServeProcess,
                                              mallory: httpx.Client) -> None:
    marker = markers()
    _, state = run_job(mallory, job(detached(marker)))
    assert state == "Finished"
    assert until(lambda: gone(marker), 10), processes_running(f"sleep {marker}")


def test_local_attempts_leave_nothing_behind(local_engine: Engine) -> None:
    marker = markers()
    job_id = local_engine.submit(make_job({"t": make_task(detached(marker), count=2)}))
    assert local_engine.wait(job_id, timeout=30).state.value == "Finished"
    assert until(lambda: gone(marker), 10), processes_running(f"sleep {marker}")


def test_stopping_a_job_kills_detached_processes(local_engine: Engine) -> None:
    marker = markers()
    job_id = local_engine.submit(make_job({"t": make_task(detached(marker) + "; sleep 600")}))
    assert until(lambda: not gone(marker), 20)
    local_engine.stop(job_id)
    assert until(lambda: gone(marker), 10), processes_running(f"sleep {marker}")


ENGINE = """
import sys, time
from pathlib import Path
from batchyard.service import open_engine
from batchyard.settings import Settings
from tests.integration.conftest import make_job, make_task
engine = open_engine(Settings(data_dir=Path(sys.argv[1]), slots=1))
engine.submit(make_job({"t": make_task(Path(sys.argv[2]).read_text())}))
time.sleep(600)
"""


def test_a_restarted_engine_kills_what_a_killed_one_left(tmp_path: Path) -> None:
    marker = markers()
    data = tmp_path / "data"
    first_attempt = (f'if [ "$BATCH_COMPUTE_DAG_ATTEMPT" = 1 ]; then {detached(marker)}; '
                     "sleep 600; fi")
    command = tmp_path / "command.sh"
    command.write_text(first_attempt)
    process = subprocess.Popen([sys.executable, "-c", ENGINE, str(data), str(command)])
    try:
        assert until(lambda: not gone(marker), 30)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    with open_engine(Settings(data_dir=data, slots=1)):
        assert until(lambda: gone(marker), 10), processes_running(f"sleep {marker}")
