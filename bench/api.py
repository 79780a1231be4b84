"""How fast is the REST API? Create-job and get-job throughput, and submit-to-Running latency.

    python bench/api.py [--jobs 300] [--gets 2000] [--clients 4] [--latency 30] [--slots 2]

Starts a real `batchyard serve` (a subprocess on 127.0.0.1, a free port, a fresh temporary
data dir), creates an access key, and drives it with httpx, every request signed like the
official SDK:

- create: `--jobs` POST /jobs (one task, one instance, CommandLine `true`) from `--clients`
  threads; jobs/s and the p50/p95 request latency;
- get: `--gets` GET /jobs/{id} from `--clients` threads; requests/s and p50/p95;
- get idle: a quarter of `--gets` from one thread once every job has ended;
- latency: `--latency` jobs (CommandLine `true`) submitted one at a time on an idle server,
  each polled until it ended; p50/p95 of StartTime - CreationTime (server clock) and of the
  time until the client first saw it past Waiting (polling every 2 ms).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from batchyard.api.signature import signed_headers
from batchyard.cli.keys import open_key_store
from batchyard.settings import Settings

SERVER = """
from pathlib import Path
from batchyard.cli.server import serve
serve(host="127.0.0.1", port={port}, data_dir=Path({data_dir!r}), database_url=None,
      slots={slots}, log_level="warning")
"""


class Signer(httpx.Auth):
    def __init__(self, key_id: str, secret: str) -> None:
        self.key_id, self.secret = key_id, secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        target = request.url.raw_path.decode("ascii")
        request.headers.update(signed_headers(self.key_id, self.secret, request.method, target))
        yield request


def job_body(command: str = "true") -> dict[str, Any]:
    task = {"InstanceCount": 1, "AutoCluster": {"InstanceType": "ecs.sn1.medium"},
            "Parameters": {"Command": {"CommandLine": command, "PackagePath": ""},
                           "StdoutRedirectPath": "oss://bench/logs/",
                           "StderrRedirectPath": "oss://bench/logs/"}}
    return {"Name": "bench", "Priority": 0, "DAG": {"Tasks": {"work": task}}}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_server(data_dir: Path, slots: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    code = SERVER.format(port=port, data_dir=str(data_dir), slots=slots)
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/quotas", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the server did not start within 30 s")


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def hammer(client: httpx.Client, count: int, clients: int,
           request: Callable[[int], httpx.Response]) -> tuple[float, list[float]]:
    """Run `count` requests on `clients` threads; (wall seconds, per-request seconds)."""
    def one(index: int) -> float:
        started = time.perf_counter()
        response = request(index)
        assert response.status_code < 300, response.text
        return time.perf_counter() - started

    with ThreadPoolExecutor(clients) as pool:
        started = time.perf_counter()
        latencies = list(pool.map(one, range(count)))
        return time.perf_counter() - started, latencies


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(label: str, count: int, wall: float, latencies: list[float]) -> None:
    print(f"{label:<8} {count:>6} requests in {wall:6.2f} s = {count / wall:7.1f}/s   "
          f"p50 {percentile(latencies, 0.5) * 1e3:6.2f} ms   "
          f"p95 {percentile(latencies, 0.95) * 1e3:6.2f} ms")


def wait_idle(client: httpx.Client, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [job for state in ("Waiting", "Running")
                for job in client.get("/jobs", params={"State": state}).json()["Items"]]
        if not busy:
            return
        time.sleep(0.1)


def parse_time(text: str) -> float:
    return datetime.strptime(text.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def submit_to_running(client: httpx.Client) -> tuple[float, float]:
    """(server StartTime - CreationTime, client-observed seconds until no longer Waiting);
    returns once the job ended, so every sample starts on an idle server."""
    started = time.perf_counter()
    job_id = client.post("/jobs", json=job_body()).json()["Id"]
    observed = 0.0
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if not observed and job["State"] != "Waiting":
            observed = time.perf_counter() - started
        if job["State"] in ("Finished", "Failed", "Stopped"):
            break
        time.sleep(0.002)
    server = parse_time(job["StartTime"]) - parse_time(job["CreationTime"])
    return server, observed


def run(arguments: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-api-") as folder:
        data_dir = Path(folder)
        key = open_key_store(Settings(data_dir=data_dir)).create("bench")
        process, url = start_server(data_dir, arguments.slots)
        try:
            with httpx.Client(base_url=url, auth=Signer(key.id, key.secret), timeout=60,
                              limits=httpx.Limits(max_connections=arguments.clients)) as client:
                measure(client, arguments)
        finally:
            process.terminate()
            process.wait(30)


def measure(client: httpx.Client, arguments: argparse.Namespace) -> None:
    print(f"server: {arguments.slots} slots; client: {arguments.clients} threads; "
          f"{os.cpu_count()} CPUs")
    body = job_body()
    wall, latencies = hammer(client, arguments.jobs, arguments.clients,
                             lambda _: client.post("/jobs", json=body))
    report("create", arguments.jobs, wall, latencies)
    job_id = client.get("/jobs", params={"MaxItemCount": 1}).json()["Items"][0]["Id"]
    wall, latencies = hammer(client, arguments.gets, arguments.clients,
                             lambda _: client.get(f"/jobs/{job_id}"))
    report("get", arguments.gets, wall, latencies)
    wait_idle(client)
    wall, latencies = hammer(client, arguments.gets // 4, 1,
                             lambda _: client.get(f"/jobs/{job_id}"))
    report("get idle", arguments.gets // 4, wall, latencies)
    samples = [submit_to_running(client) for _ in range(arguments.latency)]
    for label, values in (("server", [s for s, _ in samples]),
                          ("client", [c for _, c in samples])):
        print(f"submit->Running ({label} view, {len(values)} jobs): "
              f"p50 {statistics.median(values) * 1e3:6.1f} ms   "
              f"p95 {percentile(values, 0.95) * 1e3:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--gets", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--latency", type=int, default=30)
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
