"""How fast is the REST API? Create-job and get-job throughput, and submit-to-Running latency.

    python bench/api.py [--jobs 1000] [--gets 2000] [--clients 4] [--latency 30] [--slots 2]

Starts a real `batchyard serve` (a subprocess on 127.0.0.1, a free port, a fresh temporary
data dir), creates an access key, and drives it with requests signed like the official SDK:

- create, queued: `--jobs` POST /jobs (one task, one instance, CommandLine `true`) from
  `--clients` client processes while a blocker job holds every slot, so the new jobs queue
  as they would on a busy installation; jobs/s and the p50/p95 request latency (this is the
  rate the API accepts work at; the target applies to it);
- get: `--gets` GET /jobs/{id} from `--clients` processes while those jobs run (the blocker
  is stopped first); requests/s and p50/p95;
- create, free slots: `--jobs` more, each starting as soon as it is stored, so every create
  competes with running the jobs created before it;
- get idle: a quarter of `--gets` from one process once every job has ended, then `--gets`
  from `--clients` processes (the API alone, without the engine competing for the CPU);
- latency: `--latency` jobs (CommandLine `true`) submitted one at a time on an idle server,
  each polled until it ended; p50/p95 of StartTime - CreationTime (server clock) and of the
  time until the client first saw it past Waiting (polling every 2 ms).

The client shares the machine's CPUs with the server, so it is kept cheap: each client
process signs its requests before the timed window (each with its own nonce and the current
Date, so every one is still verified by the server), then sends them one after the other over
one keep-alive `http.client` connection. Processes, not threads: they do not share a GIL.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Generator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from batchyard.api.signature import signed_headers
from batchyard.cli.keys import open_key_store
from batchyard.settings import Settings

SERVER = """
from pathlib import Path
from batchyard.cli.server import serve
serve(host="127.0.0.1", port={port}, data_dir=Path({data_dir!r}), database_url=None,
      slots={slots}, log_level="warning", insecure_no_sandbox={insecure})
"""


class Signer(httpx.Auth):
    requires_request_body = True

    def __init__(self, key_id: str, secret: str) -> None:
        self.key_id, self.secret = key_id, secret

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        target = request.url.raw_path.decode("ascii")
        request.headers.update(signed_headers(self.key_id, self.secret, request.method, target,
                                              body=request.content))
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


def start_server(data_dir: Path, slots: int,
                 insecure_no_sandbox: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """`batchyard serve` on a free port of 127.0.0.1, once it answers; (process, base URL)."""
    port = free_port()
    code = SERVER.format(port=port, data_dir=str(data_dir), slots=slots,
                         insecure=insecure_no_sandbox)
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


TARGETS = {"create": 500.0, "get": 1500.0}
"""Requests per second the issue asks for (2-core machine)."""
LATENCY_TARGET = 0.020
"""Seconds: p50 of submit-to-Running, as the client sees it."""


@dataclass(frozen=True)
class Load:
    """What one client process sends: `count` signed requests `method target`, `body`."""

    url: str
    key_id: str
    secret: str
    method: str
    target: str
    count: int
    body: bytes = b""


def drive(load: Load, start_at: float) -> tuple[float, float, list[float]]:
    """Sign `load.count` requests, wait until `start_at` (time.monotonic), send them over one
    keep-alive connection; (first send, last answer, per-request seconds)."""
    parts = urlsplit(load.url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)
    connection.connect()
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    requests = []
    for _ in range(load.count):
        headers = signed_headers(load.key_id, load.secret, load.method, load.target,
                                 body=load.body)
        headers["content-length"] = str(len(load.body))
        requests.append(headers)
    latencies = []
    time.sleep(max(0.0, start_at - time.monotonic()))
    first = time.monotonic()
    for headers in requests:
        started = time.monotonic()
        connection.request(load.method, load.target, load.body, headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{load.method} {load.target}: {response.status} {answer!r}")
        latencies.append(time.monotonic() - started)
    last = time.monotonic()
    connection.close()
    return first, last, latencies


def hammer(pool: Executor, processes: int, load: Load) -> tuple[float, list[float]]:
    """`load.count` requests shared by `processes` client processes; (wall s, latencies)."""
    shares = [load.count // processes + (1 if index < load.count % processes else 0)
              for index in range(processes)]
    start_at = time.monotonic() + 0.5 + load.count * 1e-4  # time to sign before it
    futures = [pool.submit(drive, Load(load.url, load.key_id, load.secret, load.method,
                                       load.target, share, load.body), start_at)
               for share in shares if share]
    results = [future.result() for future in futures]
    wall = max(last for _, last, _ in results) - min(first for first, _, _ in results)
    return wall, [latency for _, _, latencies in results for latency in latencies]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(label: str, count: int, wall: float, latencies: list[float],
           target: float | None = None) -> None:
    rate = count / wall
    versus = f"   {rate / target:5.2f}x target {target:.0f}/s" if target else ""
    print(f"{label:<21} {count:>6} requests in {wall:6.2f} s = {rate:7.1f}/s   "
          f"p50 {percentile(latencies, 0.5) * 1e3:6.2f} ms   "
          f"p95 {percentile(latencies, 0.95) * 1e3:6.2f} ms   "
          f"p99 {percentile(latencies, 0.99) * 1e3:6.2f} ms{versus}", flush=True)


def occupy_every_slot(client: httpx.Client, slots: int, timeout: float = 30) -> str:
    """Submit a job of `slots` long instances and wait until they all run; its id."""
    body = job_body("sleep 600")
    body["DAG"]["Tasks"]["work"]["InstanceCount"] = slots
    job_id: str = client.post("/jobs", json=body).json()["Id"]
    deadline = time.monotonic() + timeout
    while client.get(f"/jobs/{job_id}").json()["InstanceMetrics"]["RunningCount"] < slots:
        if time.monotonic() > deadline:
            raise RuntimeError("the blocker job did not start")
        time.sleep(0.05)
    return job_id


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
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(arguments.clients, mp_context=context) as pool:
            list(pool.map(abs, range(arguments.clients)))  # start the client processes now
            process, url = start_server(data_dir, arguments.slots)
            try:
                with httpx.Client(base_url=url, auth=Signer(key.id, key.secret),
                                  timeout=60) as client:
                    measure(pool, client, Load(url, key.id, key.secret, "GET", "/", 0),
                            arguments)
            finally:
                process.terminate()
                process.wait(30)


def measure(pool: Executor, client: httpx.Client, signer: Load,
            arguments: argparse.Namespace) -> None:
    fast = [name for name in ("uvloop", "httptools") if find_spec(name)]
    print(f"server: {arguments.slots} slots, {' + '.join(fast) or 'asyncio + h11'}; "
          f"client: {arguments.clients} processes; {os.cpu_count()} CPUs")
    body = json.dumps(job_body()).encode()
    create = Load(signer.url, signer.key_id, signer.secret, "POST", "/jobs", arguments.jobs,
                  body)
    blocker = occupy_every_slot(client, arguments.slots)
    wall, latencies = hammer(pool, arguments.clients, create)
    report("create, queued", arguments.jobs, wall, latencies, TARGETS["create"])
    client.post(f"/jobs/{blocker}/stop").raise_for_status()
    job_id = client.get("/jobs", params={"MaxItemCount": 1}).json()["Items"][0]["Id"]
    get = Load(signer.url, signer.key_id, signer.secret, "GET", f"/jobs/{job_id}",
               arguments.gets)
    wall, latencies = hammer(pool, arguments.clients, get)
    report("get", arguments.gets, wall, latencies, TARGETS["get"])
    wait_idle(client)
    wall, latencies = hammer(pool, arguments.clients, create)
    report("create, free slots", arguments.jobs, wall, latencies)
    wait_idle(client)
    idle = Load(get.url, get.key_id, get.secret, "GET", get.target, arguments.gets // 4)
    wall, latencies = hammer(pool, 1, idle)
    report("get idle", idle.count, wall, latencies)
    wall, latencies = hammer(pool, arguments.clients, get)
    report(f"get idle, {arguments.clients} processes", get.count, wall, latencies,
           TARGETS["get"])
    samples = [submit_to_running(client) for _ in range(arguments.latency)]
    for label, values in (("server", [s for s, _ in samples]),
                          ("client", [c for _, c in samples])):
        p50 = statistics.median(values)
        versus = f"   target p50 < {LATENCY_TARGET * 1e3:.0f} ms: " + (
            "met" if p50 < LATENCY_TARGET else "NOT met") if label == "client" else ""
        print(f"submit->Running ({label} view, {len(values)} jobs): "
              f"p50 {p50 * 1e3:6.1f} ms   "
              f"p95 {percentile(values, 0.95) * 1e3:6.1f} ms{versus}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--gets", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--latency", type=int, default=30)
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
