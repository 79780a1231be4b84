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

Each line also gives the CPU time the server process spent per request in that window
(`/proc/<pid>/stat`: all its threads — the API, and the engine's control loop, which runs
there too; not the agent process that runs the attempts): unlike requests/s, it hardly
depends on what else the machine runs.

    python bench/api.py --in-process [--gets 3000]

measures one signed GET /jobs/{id} without HTTP: the application is called directly (ASGI)
on an idle engine, in rounds of `--gets` requests signed beforehand and sent by `--clients`
concurrent tasks (each waits for its answer before it sends the next); the best round's CPU
time per request (`time.process_time`, every thread of the process) and a cProfile of
another round with `--profile`. `--busy-thread` adds the wall time per request while another
thread computes in Python (as the engine's thread does while jobs run), which shows what
waiting for the GIL costs a request. It costs what the server spends above uvicorn's parsing.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Generator, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
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


@dataclass(frozen=True)
class Window:
    """One timed window: wall seconds, each request's seconds, the server's CPU seconds."""

    wall: float
    latencies: list[float]
    cpu: float


def hammer(pool: Executor, processes: int, load: Load, server: int) -> Window:
    """`load.count` requests shared by `processes` client processes, while process `server`'s
    CPU time is measured."""
    shares = [load.count // processes + (1 if index < load.count % processes else 0)
              for index in range(processes)]
    start_at = time.monotonic() + 0.5 + load.count * 1e-4  # time to sign before it
    futures = [pool.submit(drive, Load(load.url, load.key_id, load.secret, load.method,
                                       load.target, share, load.body), start_at)
               for share in shares if share]
    time.sleep(max(0.0, start_at - time.monotonic()))
    cpu = cpu_seconds(server)
    results = [future.result() for future in futures]
    cpu = cpu_seconds(server) - cpu
    wall = max(last for _, last, _ in results) - min(first for first, _, _ in results)
    return Window(wall, [latency for _, _, latencies in results for latency in latencies], cpu)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (every thread of it)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report(label: str, count: int, window: Window, target: float | None = None) -> None:
    rate = count / window.wall
    latencies = window.latencies
    versus = f"   {rate / target:5.2f}x target {target:.0f}/s" if target else ""
    print(f"{label:<21} {count:>6} requests in {window.wall:6.2f} s = {rate:7.1f}/s   "
          f"p50 {percentile(latencies, 0.5) * 1e3:6.2f} ms   "
          f"p95 {percentile(latencies, 0.95) * 1e3:6.2f} ms   "
          f"p99 {percentile(latencies, 0.99) * 1e3:6.2f} ms   "
          f"server CPU {window.cpu / count * 1e3:5.3f} ms/request{versus}", flush=True)


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
                            process.pid, arguments)
            finally:
                process.terminate()
                process.wait(30)


def measure(pool: Executor, client: httpx.Client, signer: Load, server: int,
            arguments: argparse.Namespace) -> None:
    fast = [name for name in ("uvloop", "httptools") if find_spec(name)]
    print(f"server: {arguments.slots} slots, {' + '.join(fast) or 'asyncio + h11'}; "
          f"client: {arguments.clients} processes; {os.cpu_count()} CPUs")
    body = json.dumps(job_body()).encode()
    create = Load(signer.url, signer.key_id, signer.secret, "POST", "/jobs", arguments.jobs,
                  body)
    blocker = occupy_every_slot(client, arguments.slots)
    report("create, queued", arguments.jobs, hammer(pool, arguments.clients, create, server),
           TARGETS["create"])
    client.post(f"/jobs/{blocker}/stop").raise_for_status()
    job_id = client.get("/jobs", params={"MaxItemCount": 1}).json()["Items"][0]["Id"]
    get = Load(signer.url, signer.key_id, signer.secret, "GET", f"/jobs/{job_id}",
               arguments.gets)
    report("get", arguments.gets, hammer(pool, arguments.clients, get, server), TARGETS["get"])
    wait_idle(client)
    report("create, free slots", arguments.jobs,
           hammer(pool, arguments.clients, create, server))
    wait_idle(client)
    idle = Load(get.url, get.key_id, get.secret, "GET", get.target, arguments.gets // 4)
    report("get idle", idle.count, hammer(pool, 1, idle, server))
    report(f"get idle, {arguments.clients} processes", get.count,
           hammer(pool, arguments.clients, get, server), TARGETS["get"])
    samples = [submit_to_running(client) for _ in range(arguments.latency)]
    for label, values in (("server", [s for s, _ in samples]),
                          ("client", [c for _, c in samples])):
        p50 = statistics.median(values)
        versus = f"   target p50 < {LATENCY_TARGET * 1e3:.0f} ms: " + (
            "met" if p50 < LATENCY_TARGET else "NOT met") if label == "client" else ""
        print(f"submit->Running ({label} view, {len(values)} jobs): "
              f"p50 {p50 * 1e3:6.1f} ms   "
              f"p95 {percentile(values, 0.95) * 1e3:6.1f} ms{versus}")


async def call_app(app: Any, method: str, target: str, headers: dict[str, str],
                   body: bytes = b"") -> tuple[int, bytes]:
    """One request to the ASGI application `app`, as uvicorn would pass it; (status, body)."""
    path, _, query = target.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
             "http_version": "1.1", "server": ("127.0.0.1", 9900),
             "client": ("127.0.0.1", 50000), "scheme": "http", "method": method,
             "root_path": "", "path": path, "raw_path": path.encode(),
             "query_string": query.encode(),
             "headers": [(b"host", b"127.0.0.1:9900"), *[
                 (name.encode("latin-1"), value.encode("latin-1"))
                 for name, value in headers.items()]]}
    messages: list[dict[str, Any]] = []
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:  # a request of ours is never left waiting for more
            raise RuntimeError("the application asked for more than the body")
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    return messages[0]["status"], b"".join(m.get("body", b"") for m in messages[1:])


async def in_process(arguments: argparse.Namespace) -> None:
    """CPU per signed GET /jobs/{id}, calling the application directly (see the docstring)."""
    import cProfile
    import pstats

    from batchyard.api import create_app

    with tempfile.TemporaryDirectory(prefix="batchyard-bench-api-") as folder:
        settings = Settings(data_dir=Path(folder), slots=arguments.slots,
                            insecure_no_sandbox=True)
        key = open_key_store(settings).create("bench")
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            body = json.dumps(job_body()).encode()
            headers = signed_headers(key.id, key.secret, "POST", "/jobs", body=body)
            status, answer = await call_app(app, "POST", "/jobs", headers, body)
            assert status == 201, answer
            target = f"/jobs/{json.loads(answer)['Id']}"
            rounds = [await _round(app, key.id, key.secret, target, arguments.gets,
                                   arguments.clients) for _ in range(arguments.rounds)]
            print(f"in-process GET {target}, {arguments.clients} concurrent clients: best of "
                  f"{len(rounds)} rounds of {arguments.gets}: "
                  f"CPU {min(cpu for cpu, _ in rounds) * 1e6:.0f} µs/request (rounds: "
                  f"{', '.join(f'{cpu * 1e6:.0f}' for cpu, _ in rounds)})")
            if arguments.busy_thread:
                with busy_thread():
                    walls = [(await _round(app, key.id, key.secret, target, arguments.gets,
                                           arguments.clients))[1] for _ in range(3)]
                print(f"  with a thread busy in Python beside (the engine's place): wall "
                      f"{min(walls) * 1e6:.0f} µs/request, best of 3 (alone: "
                      f"{min(wall for _, wall in rounds) * 1e6:.0f})")
            if arguments.profile:
                profile = cProfile.Profile()
                await _round(app, key.id, key.secret, target, arguments.gets, arguments.clients,
                             profile)
                pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
                pstats.Stats(profile).sort_stats("tottime").print_stats(25)
                if os.environ.get("CALLERS"):
                    pstats.Stats(profile).print_callers(os.environ["CALLERS"])


@contextmanager
def busy_thread() -> Iterator[None]:
    """A thread that keeps computing in Python meanwhile, as the engine's thread does while
    jobs run: each time the event loop's thread lets go of the GIL (a system call, a call
    into SQLite), it may have to wait for it."""
    stop = threading.Event()

    def spin() -> None:
        count = 0
        while not stop.is_set():
            count += 1

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        yield
    finally:
        stop.set()
        spinner.join()


async def _round(app: Any, key_id: str, secret: str, target: str, count: int,
                 concurrency: int, profile: Any = None) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per request of `count` signed GETs of `target`, signed
    beforehand, sent by `concurrency` clients (tasks) one after the other."""
    signed = [signed_headers(key_id, secret, "GET", target) for _ in range(count)]

    async def client(share: list[dict[str, str]]) -> None:
        for headers in share:
            status, answer = await call_app(app, "GET", target, headers)
            if status != 200:
                raise RuntimeError(f"GET {target}: {status} {answer!r}")

    if profile is not None:
        profile.enable()
    started, began = time.process_time(), time.perf_counter()
    await asyncio.gather(*[client(signed[index::concurrency]) for index in range(concurrency)])
    spent = (time.process_time() - started) / count
    wall = (time.perf_counter() - began) / count
    if profile is not None:
        profile.disable()
    return spent, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--gets", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--latency", type=int, default=30)
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--in-process", action="store_true",
                        help="only the CPU per GET /jobs/{id}, the application called directly")
    parser.add_argument("--rounds", type=int, default=5, help="with --in-process")
    parser.add_argument("--profile", action="store_true", help="with --in-process: cProfile")
    parser.add_argument("--busy-thread", action="store_true",
                        help="with --in-process: also the wall time per request while a "
                             "thread computes beside (GIL)")
    arguments = parser.parse_args()
    if arguments.in_process:
        with asyncio.Runner(loop_factory=_fast_loop()) as runner:
            runner.run(in_process(arguments))
    else:
        run(arguments)


def _fast_loop() -> Any:
    """uvloop's loop when installed, as the server runs on."""
    if find_spec("uvloop") is None:
        return None
    import uvloop

    return uvloop.new_event_loop


if __name__ == "__main__":
    main()
