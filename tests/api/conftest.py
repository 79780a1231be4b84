"""A real `batchyard serve` (uvicorn on 127.0.0.1, a free port) for the whole API suite,
with access keys for two tenants and clients that sign like the official SDK."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from batchyard.adapters.credentials import AccessKey, KeyStore
from batchyard.api import create_app
from batchyard.api.signature import signed_headers
from batchyard.cli.keys import open_key_store
from batchyard.settings import BucketGrant, Settings


@dataclass(frozen=True)
class LiveServer:
    url: str
    port: int
    settings: Settings
    keys: KeyStore


class Signer(httpx.Auth):
    """Signs each request the way the SDK does, on its raw target, plus a signed Content-MD5
    of the body (as batchyard's own clients do)."""

    requires_request_body = True

    def __init__(self, key_id: str, secret: str) -> None:
        self.key_id = key_id
        self.secret = secret

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        target = request.url.raw_path.decode("ascii")
        request.headers.update(signed_headers(self.key_id, self.secret, request.method, target,
                                              body=request.content))
        yield request


def echo_task(command: str = "echo hello", count: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "InstanceCount": count, "MaxRetryCount": 0, "Timeout": 600,
        "AutoCluster": {"ImageId": "img-ubuntu", "InstanceType": "ecs.sn1.medium",
                        "ResourceType": "OnDemand"},
        "Parameters": {"Command": {"CommandLine": command, "PackagePath": ""},
                       "StdoutRedirectPath": "oss://api-tests/logs/",
                       "StderrRedirectPath": "oss://api-tests/logs/"},
        **extra,
    }


def job_body(name: str = "api-test", command: str = "echo hello", count: int = 1,
             priority: int = 0) -> dict[str, Any]:
    return {"Name": name, "Priority": priority, "Type": "DAG", "JobFailOnInstanceFail": True,
            "DAG": {"Tasks": {"work": echo_task(command, count)}, "Dependencies": {}}}


def wait_for_state(client: httpx.Client, job_id: str, states: set[str],
                   timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if job["State"] in states or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


@contextmanager
def serving(settings: Settings, http: type[asyncio.Protocol] | str = "auto",
            console: bool = False) -> Iterator[str]:
    """`create_app(settings)` on uvicorn in a thread of this process (so a test can patch
    the server, or choose its HTTP protocol); its URL. `console`: with the web console at
    /console, as `batchyard serve` has it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    app = create_app(settings)
    if console:
        from batchyard.console.app import install

        install(app)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", http=http))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(20)
        listener.close()


@contextmanager
def live_server(data_dir: Path, slots: int = 4) -> Iterator[LiveServer]:
    """A server on `data_dir` whose tenants share one log bucket, `api-tests` (each would
    own one of its own otherwise)."""
    shared = {"api-tests": BucketGrant(owner="alice", write=["*"])}
    settings = Settings(data_dir=data_dir, slots=slots, bucket_grants=shared)
    with serving(settings) as url:
        yield LiveServer(url, int(url.rsplit(":", 1)[1]), settings, open_key_store(settings))


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with live_server(tmp_path_factory.mktemp("serve")) as live:
        yield live


@pytest.fixture(scope="session")
def alice_key(server: LiveServer) -> AccessKey:
    return server.keys.create("alice", "API tests")


@pytest.fixture(scope="session")
def bob_key(server: LiveServer) -> AccessKey:
    return server.keys.create("bob", "API tests, second tenant")


def signed_client(server: LiveServer, key: AccessKey) -> httpx.Client:
    return httpx.Client(base_url=server.url, auth=Signer(key.id, key.secret), timeout=30)


@pytest.fixture()
def alice(server: LiveServer, alice_key: AccessKey) -> Iterator[httpx.Client]:
    with signed_client(server, alice_key) as client:
        yield client


@pytest.fixture()
def bob(server: LiveServer, bob_key: AccessKey) -> Iterator[httpx.Client]:
    with signed_client(server, bob_key) as client:
        yield client


@pytest.fixture()
def anonymous(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client
