"""Can one `batchyard serve` run a very large task, and does it stay responsive meanwhile?

    python bench/scale.py [--count 100000] [--slots N] [--sandbox] [--interval 0.2]

Starts a real `batchyard serve` (a subprocess, 127.0.0.1, a fresh temporary data dir, as
bench/api.py does), submits ONE job of one task with InstanceCount COUNT and CommandLine
`true`, and follows it with signed `GET /jobs/{id}` requests, one every `--interval` seconds
(one client, one request at a time; today each GET counts the job's instances, 58 ms at
100,000, so polling every 0.05 s took a large share of the server's CPU and slowed the
job). Then, in the same invocation, xargs runs the same COUNT `bash -c true` processes with
`-P N`. It prints:

- wall time from submit until the client sees the job Finished (the server's own
  EndTime - CreationTime beside it), against xargs, and the ratio;
- batchyard's peak RSS: the VmHWM of the server process plus that of its agent process
  (which runs the attempts), and their RSS sampled along the run (at 10 %, 50 % and the
  end of the instances), target < 512 MB;
- submit -> first instance Running: the server's StartTime - CreationTime of the job, and
  what the client saw (it polls every 2 ms until the job leaves Waiting);
- the latency of the GET /jobs/{id} requests sent while the job ran: p50, p99 and max.

By default the server runs attempts unconfined (`--insecure-no-sandbox`): the sandbox adds
4-6 ms of wall time per instance (bench/sandbox.py), which would make 100,000 instances take
a quarter of an hour on two CPUs and measure bubblewrap rather than batchyard. `--sandbox`
confines them as a production server does. The output says which.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from instances import job_description, time_xargs

from api import Signer, parse_time, percentile, start_server
from batchyard.agent.process import agent_processes
from batchyard.cli.keys import open_key_store
from batchyard.settings import Settings

RSS_TARGET_MB = 512
ENDED = ("Finished", "Failed", "Stopped")


def memory_kb(pid: int, field_name: str) -> int:
    """A `Vm…` line of /proc/PID/status, in kB (0 once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def batchyard_kb(pid: int, field_name: str) -> int:
    """A `Vm…` figure of the server and its agent processes together, in kB."""
    return memory_kb(pid, field_name) + sum(memory_kb(agent, field_name)
                                            for agent in agent_processes(pid))


@dataclass
class Follow:
    """What the client saw while the job ran."""

    submitted: float
    first_running: float = 0.0
    finished: float = 0.0
    latencies: list[float] = field(default_factory=list)
    rss_mb: dict[str, float] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)


def timed_get(client: httpx.Client, path: str, follow: Follow) -> dict[str, Any]:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    job: dict[str, Any] = response.json()
    if job["State"] == "Running":
        follow.latencies.append(elapsed)
    return job


def note_rss(follow: Follow, pid: int, job: dict[str, Any], count: int) -> None:
    """Sample the server's RSS when the job passes 10 % and 50 % of its instances."""
    done = job["InstanceMetrics"]["FinishedCount"] + job["InstanceMetrics"]["FailedCount"]
    for label, fraction in (("10 %", 0.1), ("50 %", 0.5)):
        if label not in follow.rss_mb and done >= fraction * count:
            follow.rss_mb[label] = batchyard_kb(pid, "VmRSS") / 1024


def follow_job(client: httpx.Client, pid: int, count: int, interval: float) -> Follow:
    """Submit the job, poll it fast until it runs, then every `interval` s until it ends."""
    follow = Follow(submitted=time.perf_counter())
    job_id = client.post("/jobs", json=job_description(count)).json()["Id"]
    path = f"/jobs/{job_id}"
    job = timed_get(client, path, follow)
    while job["State"] not in ENDED:
        if not follow.first_running and job["State"] != "Waiting":
            follow.first_running = time.perf_counter() - follow.submitted
        note_rss(follow, pid, job, count)
        time.sleep(interval if follow.first_running else 0.002)
        job = timed_get(client, path, follow)
    follow.finished = time.perf_counter() - follow.submitted
    follow.rss_mb["end"] = batchyard_kb(pid, "VmRSS") / 1024
    follow.job = job
    return follow


def report(follow: Follow, count: int, slots: int, sandbox: bool, xargs_wall: float,
           peak_mb: float) -> None:
    job = follow.job
    server_wall = parse_time(job["EndTime"]) - parse_time(job["CreationTime"])
    first = parse_time(job["StartTime"]) - parse_time(job["CreationTime"])
    ratio = follow.finished / xargs_wall
    latencies = follow.latencies or [0.0]
    samples = ", ".join(f"{label} {mb:.0f} MB" for label, mb in follow.rss_mb.items())
    print("\n".join([
        f"{count} instances of `true` in one task, {slots} slots, {os.cpu_count()} CPUs "
        f"(load average {os.getloadavg()[0]:.1f}), "
        f"attempts {'sandboxed' if sandbox else 'unconfined (--insecure-no-sandbox)'}; "
        f"job {job['State']}, {job['InstanceMetrics']['FinishedCount']} finished",
        f"  batchyard serve : {follow.finished:8.2f} s submit -> Finished "
        f"(server: {server_wall:.2f} s)   {follow.finished / count * 1000:6.2f} ms per instance",
        f"  xargs -P {slots:<6} : {xargs_wall:8.2f} s   "
        f"{xargs_wall / count * 1000:6.2f} ms per instance",
        f"  ratio batchyard / xargs: {ratio:.2f}x   ({count / follow.finished:.0f} instances/s)",
        f"  peak RSS (VmHWM, server + agent process): {peak_mb:.0f} MB "
        f"({'meets' if peak_mb < RSS_TARGET_MB else 'misses'} the target < {RSS_TARGET_MB} MB);"
        f" RSS at {samples}",
        f"  submit -> first instance Running: server {first * 1000:.1f} ms, "
        f"client saw {follow.first_running * 1000:.1f} ms",
        f"  GET /jobs/{{id}} while it ran ({len(follow.latencies)} requests): "
        f"p50 {percentile(latencies, 0.5) * 1000:.2f} ms   "
        f"p99 {percentile(latencies, 0.99) * 1000:.2f} ms   max {max(latencies) * 1000:.2f} ms",
    ]), flush=True)


def run(arguments: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="batchyard-bench-scale-") as folder:
        data_dir = Path(folder)
        key = open_key_store(Settings(data_dir=data_dir)).create("bench")
        process, url = start_server(data_dir, arguments.slots,
                                    insecure_no_sandbox=not arguments.sandbox)
        try:
            with httpx.Client(base_url=url, auth=Signer(key.id, key.secret),
                              timeout=60) as client:
                follow = follow_job(client, process.pid, arguments.count, arguments.interval)
            peak_mb = batchyard_kb(process.pid, "VmHWM") / 1024
        finally:
            process.terminate()
            process.wait(60)
        xargs = time_xargs(arguments.count, arguments.slots)
        report(follow, arguments.count, arguments.slots, arguments.sandbox, xargs.wall, peak_mb)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="instances (100,000)")
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1,
                        help="instances at once (default: CPU count)")
    parser.add_argument("--interval", type=float, default=0.2,
                        help="seconds between two GET /jobs/{id} while the job runs")
    parser.add_argument("--sandbox", action="store_true",
                        help="confine every attempt as a production server does (slow)")
    arguments = parser.parse_args()
    if arguments.count < 1 or arguments.slots < 1 or arguments.interval <= 0:
        parser.error("--count and --slots must be at least 1, --interval positive")
    run(arguments)


if __name__ == "__main__":
    main()
