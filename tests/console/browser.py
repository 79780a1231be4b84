"""The browser-test rig of the console: a real `batchyard serve` subprocess with two tenants,
Debian's Chromium driven by Playwright, and the helpers the console tests share.

The fixtures that use these are in `tests/console/conftest.py`; docs/testing.md tells how to
run the tests and where their screenshots go.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from batchyard.adapters.credentials import AccessKey
from batchyard.cli.keys import open_key_store
from batchyard.settings import Settings
from tests.api.conftest import Signer, job_body
from tests.api.test_serve import free_port, wait_until_up

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage, Error, Page

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium: the only browser the tests use (no `playwright install`)."""
BROWSER_TESTS = "BATCHYARD_BROWSER_TESTS"
"""`required` (as `.ci/run` sets it): a missing Chromium or Playwright fails the browser
tests instead of skipping them."""
ARTIFACTS = "BATCHYARD_ARTIFACTS"
"""The folder the screenshots go to, under `console/` (default: `<repo>/artifacts`)."""
REPOSITORY = Path(__file__).resolve().parents[2]
TENANTS = ("alice", "bob")
SLOTS = 2
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 10_000
"""How long a Playwright action or wait may take before it fails the test (the default of
30 s would let a broken page eat the test's whole timeout)."""


# ---- the server --------------------------------------------------------------------------

@dataclass
class ConsoleServer:
    """A running `batchyard serve` (a subprocess) with a key per tenant of `TENANTS`."""

    url: str
    """The server's base URL, `http://127.0.0.1:PORT` (the REST API is at its root)."""
    data_dir: Path
    buckets: dict[str, Path]
    """Bucket name -> its local folder: `<tenant>-data`, owned by that tenant."""
    keys: dict[str, AccessKey]
    """Tenant -> its access key (with its secret)."""
    process: subprocess.Popen[str]
    log: Path
    """The server's stderr (one line per request and per job start or end)."""

    @property
    def console(self) -> str:
        """The console's base URL, `<url>/console`."""
        return f"{self.url}/console"

    def key(self, tenant: str) -> AccessKey:
        return self.keys[tenant]

    def api(self, key: AccessKey) -> httpx.Client:
        """An HTTP client for the REST API that signs as `key` does (close it after use)."""
        return httpx.Client(base_url=self.url, auth=Signer(key.id, key.secret), timeout=30)

    def log_size(self) -> int:
        return self.log.stat().st_size

    def log_text(self, since: int = 0) -> str:
        """The server's stderr from byte `since` on."""
        with self.log.open("rb") as stream:
            stream.seek(since)
            return stream.read().decode("utf-8", "replace")

    def job(self, tenant: str, name: str = "console-test", command: str = "echo hello",
            count: int = 1, priority: int = 0) -> dict[str, Any]:
        """A one-task job body whose logs go to `tenant`'s bucket."""
        body = job_body(name, command, count, priority)
        for task in body["DAG"]["Tasks"].values():
            for stream in ("StdoutRedirectPath", "StderrRedirectPath"):
                task["Parameters"][stream] = f"oss://{tenant}-data/logs/"
        return body


def _configuration(folder: Path) -> tuple[Path, dict[str, Path]]:
    """A configuration file giving each tenant a bucket of its own, a local folder."""
    buckets = {f"{tenant}-data": folder / "buckets" / f"{tenant}-data" for tenant in TENANTS}
    # Running attempts' logs reach the object store every half second (the live log tail).
    lines = ["log_interval = 0.5", "[buckets]"]
    lines += [f'"{name}" = "{path}"' for name, path in buckets.items()]
    for tenant in TENANTS:
        lines += [f'[bucket_grants."{tenant}-data"]', f'owner = "{tenant}"']
    for path in buckets.values():
        path.mkdir(parents=True)
    config = folder / "batchyard.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config, buckets


@contextmanager
def console_server_at(folder: Path, slots: int = SLOTS) -> Iterator[ConsoleServer]:
    """`batchyard serve` on a free port of 127.0.0.1 with its data in `folder/data`, keys for
    `TENANTS` and `slots` slots; stopped (SIGTERM, then SIGKILL) when the block ends."""
    data_dir = folder / "data"
    config, buckets = _configuration(folder)
    store = open_key_store(Settings(data_dir=data_dir))
    keys = {tenant: store.create(tenant, "console tests") for tenant in TENANTS}
    port = free_port()
    log = folder / "serve.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "batchyard.cli", "serve", "--port", str(port),
             "--data-dir", str(data_dir), "--slots", str(slots), "--config", str(config),
             "--log-level", "info"], stdout=subprocess.DEVNULL, stderr=stderr, text=True)
    url = f"http://127.0.0.1:{port}"
    server = ConsoleServer(url, data_dir, buckets, keys, process, log)
    try:
        try:
            wait_until_up(f"{url}/quotas", process)
        except AssertionError:
            raise AssertionError(f"batchyard serve did not start:\n{server.log_text()}"
                                 ) from None
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


# ---- the browser -------------------------------------------------------------------------

def browser_required() -> bool:
    return os.environ.get(BROWSER_TESTS, "").lower() == "required"


def missing_browser() -> str | None:
    """Why the browser tests cannot run here (None: they can)."""
    if find_spec("playwright") is None:
        return "the browser tests need Playwright: pip install -e '.[test]'"
    if not os.access(CHROMIUM, os.X_OK):
        return (f"the browser tests need Debian's Chromium at {CHROMIUM}: "
                "apt-get install --no-install-recommends chromium")
    return None


def launch_options() -> dict[str, Any]:
    """How to start Debian's Chromium under Playwright.

    Playwright's own headless mode works with Debian's build as it is; `--no-sandbox` only
    as root (Chromium refuses to start its sandbox as root), and `--disable-dev-shm-usage`
    because containers often have a 64 MB /dev/shm, in which Chromium crashes on big pages.
    """
    args = ["--disable-dev-shm-usage"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    return {"executable_path": str(CHROMIUM), "args": args}


def artifacts() -> Path:
    """The folder of this run's screenshots: `$BATCHYARD_ARTIFACTS/console`."""
    root = Path(os.environ.get(ARTIFACTS) or REPOSITORY / "artifacts")
    return root.resolve() / "console"


def screenshot_path(test_name: str, suffix: str = "") -> Path:
    """`<artifacts>/<test name><suffix>.png`, with the name made safe for a file name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", test_name).strip("_")
    return artifacts() / f"{safe}{suffix}.png"


@dataclass
class PageWatch:
    """The console errors (CSP violations included: Chromium reports them as console errors)
    and uncaught exceptions of one page; a test allows the ones it expects."""

    name: str
    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Errors matching `pattern` (a regular expression, searched) are expected."""
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [error for error in self.errors
                if not any(pattern.search(error) for pattern in self.allowed)]

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location.get("url", "")
            self.errors.append(f"console error: {message.text}" + (f" ({where})" if where
                                                                   else ""))

    def on_page_error(self, error: Error) -> None:
        self.errors.append(f"uncaught exception: {error}")


_watches: dict[int, PageWatch] = {}


def watch(page: Page, name: str) -> PageWatch:
    """Record the console errors and uncaught exceptions of `page` from now on."""
    found = _watches[id(page)] = PageWatch(name)
    page.on("console", found.on_console)
    page.on("pageerror", found.on_page_error)
    return found


def unwatch(page: Page) -> None:
    _watches.pop(id(page), None)


def allow_console_error(page: Page, pattern: str) -> None:
    """Let a test expect console errors of `page` that match `pattern` (a regular
    expression), e.g. the browser's note about a 4xx answer the test asked for."""
    _watches[id(page)].allow(pattern)


def sign_in(page: Page, base: str, key: AccessKey) -> None:
    """Sign in to the console of the server at `base` (its URL, with or without
    `/console`) as `key`, and wait for the jobs page."""
    console = base.rstrip("/").removesuffix("/console") + "/console"
    page.goto(f"{console}/sign-in")
    page.fill('input[name="key_id"]', key.id)
    page.fill('input[name="secret"]', key.secret)
    page.press('input[name="secret"]', "Enter")
    page.wait_for_url(re.compile(r"/console/jobs(\?.*)?$"))
