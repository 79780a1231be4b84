"""Does subscribing to instance events slow the engine, and how fast does the outbox drain?

    python bench/webhooks.py [--instances 2000] [--slots 2]

Starts a real `batchyard serve` (a fresh data dir; webhooks to 127.0.0.1 allowed) and an
HTTP receiver on 127.0.0.1 that answers 200 at once, then runs the same job of
`--instances` × `true` twice:

- without a Notification: the baseline instances/s;
- with `Notification.Topic.Events = ["OnInstanceFinished"]` to the receiver: the instances/s
  of the job (the engine's rate with the outbox working beside it), and the outbox's drain
  rate — deliveries/s from the job's start until the last instance's event arrived, and how
  long after the job ended the last one came.

Prints the ratio of the two instances/s (target: subscribing does not slow the engine:
≈ 1.0×). Figures are in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from api import Signer
from batchyard.cli.keys import open_key_store
from batchyard.settings import Settings
from console import serving


class Receiver(ThreadingHTTPServer):
    """Counts the deliveries it gets, with the time of each."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Answer)
        self.times: list[float] = []
        self.ids: set[str] = set()
        self.lock = threading.Lock()


class Answer(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        with self.server.lock:
            self.server.times.append(time.monotonic())
            self.server.ids.add(self.headers.get("webhook-id", ""))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        return None


def job(count: int, endpoint: str = "") -> dict[str, Any]:
    task = {"InstanceCount": count, "MaxRetryCount": 0,
            "AutoCluster": {"InstanceType": "ecs.sn1.medium", "ImageId": "img-ubuntu"},
            "Parameters": {"Command": {"CommandLine": "true"},
                           "StdoutRedirectPath": "oss://bench/logs/",
                           "StderrRedirectPath": "oss://bench/logs/"}}
    body: dict[str, Any] = {"Name": "hooks-bench", "Type": "DAG",
                            "DAG": {"Tasks": {"work": task}}}
    if endpoint:
        body["Notification"] = {"Topic": {"Name": "bench", "Endpoint": endpoint,
                                          "Events": ["OnInstanceFinished"]}}
    return body


def run(api: httpx.Client, body: dict[str, Any]) -> tuple[float, float, float]:
    """Submit, wait for the end; (submitted, started, ended) on this machine's clock."""
    submitted = time.monotonic()
    created = api.post("/jobs", json=body)
    if created.status_code != 201:
        raise SystemExit(f"the job was refused: {created.text}")
    job_id = created.json()["Id"]
    started = 0.0
    while True:
        state = api.get(f"/jobs/{job_id}").json()["State"]
        if state == "Running" and not started:
            started = time.monotonic()
        if state in {"Finished", "Failed", "Stopped"}:
            if state != "Finished":
                raise SystemExit(f"the job ended {state}")
            return submitted, started or submitted, time.monotonic()
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=2)
    arguments = parser.parse_args()
    count = arguments.instances
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    with tempfile.TemporaryDirectory(prefix="bench-hooks-") as folder:
        data_dir = Path(folder) / "data"
        key = open_key_store(Settings(data_dir=data_dir)).create("bench", "bench")
        allowed = {"BATCHYARD_WEBHOOK_ALLOW_NETWORKS": '["127.0.0.1/32"]'}
        with serving(data_dir, arguments.slots, allowed) as url:
            api = httpx.Client(base_url=url, auth=Signer(key.id, key.secret), timeout=60)
            run(api, job(20))  # warm up
            _, began, ended = run(api, job(count))
            plain = count / (ended - began)
            print(f"{count} × true, no subscription: {ended - began:.1f} s, {plain:.0f} "
                  "instances/s")
            _, began, ended = run(api, job(count, endpoint))
            subscribed = count / (ended - began)
            deadline = time.monotonic() + 600
            while len(receiver.ids) < count and time.monotonic() < deadline:
                time.sleep(0.05)
            last = max(receiver.times, default=ended)
            print(f"{count} × true, subscribed to OnInstanceFinished: {ended - began:.1f} s, "
                  f"{subscribed:.0f} instances/s ({subscribed / plain:.2f}× without)")
            print(f"  outbox: {len(receiver.ids)} of {count} events delivered; "
                  f"{len(receiver.ids) / (last - began):.0f} deliveries/s from the job's start "
                  f"to the last delivery, the last {max(0.0, last - ended):.1f} s after the "
                  "job ended")
            print(json.dumps({"instances": count, "plain_per_s": round(plain, 1),
                              "subscribed_per_s": round(subscribed, 1),
                              "delivered": len(receiver.ids),
                              "drain_per_s": round(len(receiver.ids) / (last - began), 1),
                              "lag_s": round(max(0.0, last - ended), 2)}))
    receiver.shutdown()


if __name__ == "__main__":
    main()
