"""Each recorded attempt says when its program started, end to end: a real engine (that of
`batchyard run`, its agent in the engine's process, and that of `batchyard serve`, its agent
in a process of its own, across the channel), real programs, the real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from batchyard.domain.outcome import ErrorCode
from batchyard.domain.phases import phases_of
from batchyard.domain.records import AttemptRecord
from batchyard.orchestrator.engine import Engine
from batchyard.runner.sandbox import bwrap_path
from batchyard.service import open_engine
from tests.integration.conftest import make_job, make_task, settings_for, upload_package

CLOCK = "date +%s.%N"
"""The program's first line: when it says it ran, on its own clock."""
PACKAGE = "oss://test/pkg/clock.tar.gz"


@pytest.fixture(params=["run", "serve"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    settings = settings_for(tmp_path / "data")
    serving = request.param == "serve"
    if serving:
        settings = settings.model_copy(update={"insecure_no_sandbox": True})
    with open_engine(settings, serving=serving) as running:
        yield running


def packaged(path: str, command: str = "bash main.sh") -> dict[str, Any]:
    task = make_task(command)
    task["Parameters"]["Command"]["PackagePath"] = path
    return task


def only_attempt(engine: Engine, job_id: str, task: str) -> AttemptRecord:
    attempt, = engine.attempts(job_id, task, 0)
    return attempt


def program_clock(engine: Engine, job_id: str, task: str) -> datetime:
    instance, = engine.instances(job_id, task)
    first = engine.objects.read_bytes(instance.stdout_path).decode().splitlines()[0]
    return datetime.fromtimestamp(float(first), UTC)


def test_every_attempt_records_when_its_program_started(engine: Engine) -> None:
    upload_package(engine.objects, PACKAGE, {"main.sh": f"{CLOCK}\nsleep 0.2\n"})
    tasks = {"plain": make_task(f"{CLOCK}; sleep 0.2"), "packaged": packaged(PACKAGE),
             "missing": packaged("oss://test/pkg/none.tar.gz")}
    job_id = engine.submit(make_job(tasks, JobFailOnInstanceFail=False))
    engine.wait(job_id, timeout=60)
    tasks_started = {record.name: record.started for record in engine.tasks(job_id)}
    for task in ("plain", "packaged"):  # the agent's fast path, and `run_attempt`'s
        attempt = only_attempt(engine, job_id, task)
        assert attempt.exit_code == 0, attempt
        started, program, ended = attempt.started, attempt.program_started, attempt.ended
        assert started and program and ended, attempt
        assert started <= program <= program_clock(engine, job_id, task) < ended
        phases, = phases_of([attempt], tasks_started[task])
        assert phases.waiting is not None and phases.staging is not None
        assert phases.running is not None and phases.running >= 0.2
    missing = only_attempt(engine, job_id, "missing")
    assert missing.error_code == ErrorCode.PACKAGE.value
    assert missing.started is not None and missing.ended is not None
    assert missing.program_started is None  # staging failed: the program never started
    phases, = phases_of([missing], None)
    assert (phases.staging, phases.running) == (None, None)


@pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap (bwrap) is not installed")
def test_staging_an_input_mapping_comes_before_the_program(tmp_path: Path) -> None:
    with open_engine(settings_for(tmp_path / "data")) as engine:
        engine.objects.put_bytes("oss://test/in/a.txt", b"alpha")
        task = make_task(f"{CLOCK}; cat /home/input/a.txt",
                         InputMapping={"oss://test/in/": "/home/input"})
        job_id = engine.submit(make_job({"mapped": task}))
        engine.wait(job_id, timeout=60)
        attempt = only_attempt(engine, job_id, "mapped")
        assert attempt.exit_code == 0, attempt
        assert attempt.started and attempt.program_started and attempt.ended
        assert attempt.started < attempt.program_started <= program_clock(
            engine, job_id, "mapped") < attempt.ended
