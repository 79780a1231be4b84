"""How fast are the console's pages on a big installation, and how often do live pages update?

    python bench/console.py [--jobs 10000] [--instances 100000] [--rounds 20]
                            [--live-instances 2000] [--slots 2]

Fills a fresh data dir with `--jobs` one-instance jobs and a job of `--instances` instances in
one task (bench/console_data.py: the store's own operations, nothing run), starts a real
`batchyard serve` on it, signs in to the console, and waits until the seeded Waiting jobs have
run (the big job is stopped first, so its instances stay as they are). Then each page is
fetched `--rounds` times and the server's own time for it (`Server-Timing: app;dur=…`, from
the route's start to the rendered page) is reported with the wall time the client saw:

- the jobs list (first page, a state filter, a name filter, the second page);
- the big job's page with the heat-map of its big task, and the fragment a live update
  fetches; a heat-map page deep in the task; an instance page;
- baselines in the same run: the REST API's `GET /jobs` (a page of 50) and
  `GET /jobs/{id}/tasks/{task}/instances` (a page of 100) on the same data, and the ratio of
  each console page to its baseline.

Targets (issue 13): the job page of a 100,000-instance job < 1 s of server time, the jobs list
with 10,000 jobs < 300 ms.

Live updates: a job of `--live-instances` × `true` runs while a client holds the job page's
event stream (`/console/jobs/{id}/events`); it reports the events per second the browser
would get (the most in any second, and the mean) against the instances finishing per second
— the coalescing that keeps a big job from flooding the browser (at most 4 a second).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from console_data import seed

from api import Signer, free_port

JOB_PAGE_TARGET_MS = 1000.0
LIST_TARGET_MS = 300.0
MOST_EVENTS_PER_SECOND = 4


@contextmanager
def serving(data_dir: Path, slots: int, environment: dict[str, str] | None = None
            ) -> Iterator[str]:
    """`batchyard serve` on the data dir (console on; `environment` added to ours), until
    the block ends; its URL once the console answers."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "batchyard.cli", "serve", "--port", str(port), "--data-dir",
         str(data_dir), "--slots", str(slots), "--log-level", "warning"],
        env={**os.environ, **(environment or {})},
        stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/console/sign-in", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("the server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()


def signed_in(url: str, key_id: str, secret: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    form = client.get("/console/sign-in").text
    token = re.search(r'name="token" value="([^"]+)"', form)
    assert token is not None
    answer = client.post("/console/sign-in", data={"key_id": key_id, "secret": secret,
                                                   "token": token.group(1)})
    if answer.status_code != 303:
        raise SystemExit(f"could not sign in: {answer.status_code}")
    return client


def state_count(client: httpx.Client, state: str) -> int:
    page = client.get("/console/jobs").text
    found = re.search(rf">{state} <strong>(\d+)</strong>", page)
    return int(found.group(1)) if found else 0


def wait_idle(client: httpx.Client, timeout: float = 600) -> float:
    """Until no job waits or runs (the seeded Waiting jobs run `true`); seconds waited."""
    began = time.monotonic()
    while state_count(client, "Waiting") + state_count(client, "Running"):
        if time.monotonic() - began > timeout:
            raise SystemExit("the seeded jobs did not finish")
        time.sleep(1)
    return time.monotonic() - began


@dataclass(frozen=True)
class Timing:
    label: str
    server_ms: list[float]
    wall_ms: list[float]
    size: int

    @property
    def p50(self) -> float:
        return statistics.median(self.server_ms)

    @property
    def p95(self) -> float:
        ordered = sorted(self.server_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def timed(client: httpx.Client, label: str, path: str, rounds: int,
          headers: dict[str, str] | None = None) -> Timing:
    server, wall, size = [], [], 0
    for _ in range(rounds):
        began = time.perf_counter()
        answer = client.get(path, headers=headers)
        wall.append((time.perf_counter() - began) * 1000)
        if answer.status_code != 200:
            raise SystemExit(f"{path}: {answer.status_code} {answer.text[:300]}")
        timing = re.search(r"dur=([0-9.]+)", answer.headers.get("server-timing", ""))
        server.append(float(timing.group(1)) if timing else wall[-1])
        size = len(answer.content)
    return Timing(label, server, wall, size)


def print_row(timing: Timing, target: float | None = None, baseline: Timing | None = None
              ) -> None:
    extra = f"  target < {target:.0f} ms: {'met' if timing.p95 < target else 'MISSED'}" \
        if target else ""
    ratio = f"  {timing.p50 / baseline.p50:.1f}× {baseline.label}" if baseline else ""
    print(f"  {timing.label:<44} server p50 {timing.p50:7.1f} ms  p95 {timing.p95:7.1f} ms  "
          f"wall p50 {statistics.median(timing.wall_ms):7.1f} ms  {timing.size / 1024:6.1f} KB"
          f"{ratio}{extra}")


def pages(client: httpx.Client, api: httpx.Client, big_job: str, big_task: str,
          instances: int, rounds: int) -> None:
    first = client.get("/console/jobs").text
    older = re.search(r'marker=(job-[0-9A-F]+)">Older', first)
    api_list = timed(api, "API GET /jobs (50)", "/jobs?MaxItemCount=50", rounds)
    api_instances = timed(api, "API GET …/instances (100)",
                          f"/jobs/{big_job}/tasks/{big_task}/instances?MaxItemCount=100",
                          rounds)
    print(f"the jobs list ({rounds} rounds each):")
    print_row(api_list)
    for label, path in (("jobs list, first page", "/console/jobs"),
                        ("jobs list, state=failed", "/console/jobs?state=failed"),
                        ("jobs list, name contains etl-4", "/console/jobs?name=etl-4"),
                        ("jobs list, second page",
                         f"/console/jobs?marker={older.group(1) if older else ''}")):
        print_row(timed(client, label, path, rounds), LIST_TARGET_MS, api_list)
    print(f"the job of {instances} instances:")
    print_row(api_instances)
    deep = max(0, instances - 10_000)
    for label, path, headers in (
            ("job page with its heat-map", f"/console/jobs/{big_job}?task={big_task}", None),
            ("job page, live fragment", f"/console/jobs/{big_job}?task={big_task}&part=live",
             {"HX-Request": "true"}),
            (f"heat-map page from instance {deep}",
             f"/console/jobs/{big_job}/tasks/{big_task}/instances?marker={deep}", None),
            ("instance page", f"/console/jobs/{big_job}/tasks/{big_task}/instances/19",
             None)):
        target = JOB_PAGE_TARGET_MS if label.startswith("job page") else None
        print_row(timed(client, label, path, rounds, headers), target, api_instances)


def live_events(client: httpx.Client, api: httpx.Client, count: int) -> None:
    """Runs a job of `count` × `true` while reading its job page's event stream."""
    task = {"InstanceCount": count, "MaxRetryCount": 0,
            "AutoCluster": {"InstanceType": "ecs.sn1.medium", "ImageId": "img-ubuntu"},
            "Parameters": {"Command": {"CommandLine": "true"},
                           "StdoutRedirectPath": "oss://bench/logs/",
                           "StderrRedirectPath": "oss://bench/logs/"}}
    body = {"Name": "live-bench", "Type": "DAG", "DAG": {"Tasks": {"work": task}}}
    created = api.post("/jobs", json=body)
    if created.status_code != 201:
        raise SystemExit(f"the live job was refused: {created.text}")
    job_id = created.json()["Id"]
    stamps: list[float] = []
    began = time.monotonic()
    with client.stream("GET", f"/console/jobs/{job_id}/events", timeout=None) as stream:
        for line in stream.iter_lines():
            if line == "event: changed":
                stamps.append(time.monotonic() - began)
            elif line == "event: ended":
                break
    seconds = time.monotonic() - began
    per_second: dict[int, int] = {}
    for stamp in stamps:
        per_second[int(stamp)] = per_second.get(int(stamp), 0) + 1
    most = max(per_second.values(), default=0)
    print(f"live updates: a job of {count} × true ran {seconds:.1f} s, "
          f"{count / seconds:.0f} instances/s ({2 * count / seconds:.0f} instance transitions/s)")
    verdict = "met" if most <= MOST_EVENTS_PER_SECOND else "MISSED"
    print(f"  job page event stream: {len(stamps)} 'changed' events, "
          f"{len(stamps) / seconds:.1f}/s on average, at most {most} in one second "
          f"(target at most {MOST_EVENTS_PER_SECOND}: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--live-instances", type=int, default=2_000)
    parser.add_argument("--slots", type=int, default=2)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as folder:
        data_dir = Path(folder) / "data"
        seeded = seed(data_dir, arguments.jobs, arguments.instances)
        print(f"seeded {len(seeded.job_ids)} jobs and a job of {arguments.instances} instances "
              f"in {seeded.seconds:.1f} s")
        with serving(data_dir, arguments.slots) as url:
            api = httpx.Client(base_url=url, auth=Signer(seeded.key.id, seeded.key.secret),
                               timeout=60)
            api.post(f"/jobs/{seeded.big_job_id}/stop")
            client = signed_in(url, seeded.key.id, seeded.key.secret)
            waited = wait_idle(client)
            print(f"the seeded Waiting jobs ran in {waited:.0f} s; measuring on an idle server")
            pages(client, api, seeded.big_job_id, seeded.big_task, arguments.instances,
                  arguments.rounds)
            live_events(client, api, arguments.live_instances)


if __name__ == "__main__":
    main()
