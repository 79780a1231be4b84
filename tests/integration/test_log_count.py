"""The log-count quick start, exactly as a newcomer runs it: examples/log-count/run.sh."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from batchyard.domain.states import State
from batchyard.service import open_engine
from batchyard.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "log-count"
LEVEL = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (INFO|WARN|ERROR|DEBUG)\b")


def expected_counts(log: Path) -> dict[str, int]:
    """The answer, worked out here independently of the example's programs."""
    counts = Counter(match.group(1) for line in log.read_text(encoding="utf-8").splitlines()
                     if (match := LEVEL.match(line)))
    return {level: counts[level] for level in ("INFO", "WARN", "ERROR", "DEBUG")}


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """Run run.sh once (data dir and build folder in a temp dir); return where and its output."""
    folder = tmp_path_factory.mktemp("log-count")
    data, build = folder / "data", folder / "build"
    command = "batchyard" if shutil.which("batchyard") else f"{sys.executable} -m batchyard.cli"
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("BATCHYARD_")}
    environment.update(BATCHYARD_DATA_DIR=str(data), LOG_COUNT_BUILD=str(build),
                       LOG_LINES="8000", BATCHYARD=command, PYTHON=sys.executable)
    result = subprocess.run(["bash", str(EXAMPLE / "run.sh")], env=environment, cwd=folder,
                            capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return data, build, result.stdout


def test_merge_result_matches_the_counts_of_the_generated_log(
        example_run: tuple[Path, Path, str]) -> None:
    data, build, output = example_run
    expected = expected_counts(build / "log-count-data.txt")
    stored = data / "objects" / "log-count-demo" / "log-count" / "merge_result.json"
    assert json.loads(stored.read_text()) == expected
    printed = output[output.index("== result"):]
    assert json.loads(printed[printed.index("{"):]) == expected
    assert sum(expected.values()) > 0 and all(expected.values())


def test_split_wrote_exactly_one_part_per_count_instance(
        example_run: tuple[Path, Path, str]) -> None:
    data, build, _ = example_run
    parts = data / "objects" / "log-count-demo" / "log-count" / "split_results"
    assert sorted(path.name for path in parts.iterdir()) == ["0.txt", "1.txt", "2.txt"]
    joined = "".join((parts / f"{index}.txt").read_text() for index in range(3))
    assert joined == (build / "log-count-data.txt").read_text()


def test_the_three_count_instances_ran_at_the_same_time(
        example_run: tuple[Path, Path, str]) -> None:
    data, _, output = example_run
    job_id = re.findall(r"job-[0-9A-F]{32}", output)[0]
    with open_engine(Settings(data_dir=data, slots=1)) as engine:
        assert engine.job(job_id).state is State.FINISHED
        counts = engine.instances(job_id, "count")
        logs = [engine.objects.read_bytes(instance.stdout_path).decode() for instance in counts]
    assert [instance.state for instance in counts] == [State.FINISHED] * 3
    starts = [instance.started for instance in counts if instance.started]
    ends = [instance.ended for instance in counts if instance.ended]
    assert len(starts) == len(ends) == 3
    assert max(starts) < min(ends), "every count instance started before any of them ended"
    for index, log in enumerate(logs):
        assert f"count {index}: start" in log and f"count {index}: end" in log
