"""The browser-test rig itself: the server starts with its two tenants, Chromium launches and
loads a page of it, every page leaves a screenshot, and a page's console error or CSP
violation fails the test that opened it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import urlencode

import httpx
import pytest

from batchyard.adapters.credentials import AccessKey
from batchyard.adapters.store import SqlStore
from batchyard.domain.derivation import Metrics
from batchyard.domain.states import State
from batchyard.ports.reads import Window
from batchyard.settings import Settings
from tests.api.conftest import wait_for_state
from tests.console import browser as browser_rig
from tests.console.browser import (
    REPOSITORY,
    ConsoleServer,
    PageWatch,
    allow_console_error,
    sign_in,
    unwatch,
    watch,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route


def test_the_server_runs_jobs_for_two_tenants_apart(
        console_server: ConsoleServer, alice_key: AccessKey, bob_key: AccessKey,
        api: Callable[[AccessKey], httpx.Client]) -> None:
    alice, bob = api(alice_key), api(bob_key)
    created = alice.post("/jobs", json=console_server.job("alice", "rig", "echo from-alice"))
    assert created.status_code == 201, created.text
    job_id = created.json()["Id"]
    assert wait_for_state(alice, job_id, {"Finished", "Failed"})["State"] == "Finished"
    assert bob.get(f"/jobs/{job_id}").status_code == 404
    logs = list((console_server.buckets["alice-data"] / "logs").iterdir())
    assert any(b"from-alice" in path.read_bytes() for path in logs), logs


def test_chromium_loads_a_page_of_the_server(console_server: ConsoleServer, page: Page) -> None:
    # An unsigned request to the REST API: a 4xx answer in JSON, which Chromium notes as a
    # resource that failed to load (the page, and /favicon.ico it asks for as well).
    allow_console_error(page, r"Failed to load resource: the server responded with a "
                              r"status of 4\d\d")
    response = page.goto(f"{console_server.url}/jobs")
    assert response is not None and 400 <= response.status < 500
    assert "Code" in response.json()
    assert page.evaluate("navigator.userAgent").find("Chrome/") > 0


def test_a_phone_page_is_a_small_touch_screen(phone_page: Page) -> None:
    phone_page.set_content("<meta name=viewport content='width=device-width'><h1>phone</h1>")
    assert phone_page.viewport_size == {"width": 390, "height": 844}
    assert phone_page.evaluate("window.innerWidth") == 390
    assert phone_page.evaluate("window.matchMedia('(pointer: coarse)').matches")


RIGGED = """
from tests.console.conftest import *  # noqa: F403  (the rig's fixtures and hooks)
from tests.console.browser import allow_console_error


def test_clean(page, phone_page):
    page.set_content("<h1>clean</h1>")
    phone_page.set_content("<h1>clean</h1>")


def test_script_error(page):
    page.set_content("<p>x</p><script>throw new Error('thrown-by-the-page')</script>")
    page.wait_for_timeout(100)


def test_console_error(page):
    page.set_content("<p>x</p><script>console.error('logged-by-the-page')</script>")
    page.wait_for_timeout(100)


def test_allowed_error(page):
    allow_console_error(page, "expected-here")
    page.set_content("<p>x</p><script>console.error('expected-here')</script>")
    page.wait_for_timeout(100)
"""


def test_every_page_leaves_a_screenshot_and_a_console_error_fails_its_test(
        tmp_path: Path, browser: Browser) -> None:
    # The rig on a test file of its own, in a pytest of its own (the fixtures are the same).
    (tmp_path / "conftest.py").write_text(RIGGED.split("\n\n\n")[0], encoding="utf-8")
    (tmp_path / "test_pages.py").write_text(RIGGED, encoding="utf-8")
    environment = {**os.environ, "BATCHYARD_ARTIFACTS": str(tmp_path / "artifacts"),
                   "PYTHONPATH": os.pathsep.join([str(REPOSITORY / "src"), str(REPOSITORY)])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir",
         str(tmp_path), "-rf", str(tmp_path / "test_pages.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=environment)
    output = result.stdout + result.stderr
    assert "2 failed, 2 passed" in output, output
    assert "FAILED test_pages.py::test_script_error - Failed: the page logged errors" in output
    assert "\ntest_script_error: uncaught exception: thrown-by-the-page\n" in output, output
    assert "\ntest_console_error: console error: logged-by-the-page\n" in output, output
    shots = sorted(path.name for path in (tmp_path / "artifacts" / "console").iterdir())
    assert shots == ["test_allowed_error.png", "test_clean-phone.png", "test_clean.png",
                     "test_console_error.png", "test_script_error.png"]
    assert (tmp_path / "artifacts" / "console" / "test_clean.png").read_bytes().startswith(
        b"\x89PNG")


def test_a_csp_violation_is_caught(console_server: ConsoleServer, browser: Browser) -> None:
    # A page under `script-src 'self'` (the console's policy) running an inline script: the
    # violation reaches the watch as a console error.
    page = browser.new_page()
    try:
        found: PageWatch = watch(page, "csp")
        page.route(f"{console_server.url}/csp-probe", lambda route: route.fulfill(
            status=200, content_type="text/html",
            headers={"Content-Security-Policy": "script-src 'self'"},
            body="<p>csp</p><script>document.title = 'ran'</script>"))
        page.goto(f"{console_server.url}/csp-probe")
        page.wait_for_timeout(100)
        assert page.title() != "ran"
        assert any("Content Security Policy" in error for error in found.unexpected()), \
            found.errors
    finally:
        unwatch(page)
        page.close()


def test_sign_in_fills_the_form_and_waits_for_the_jobs(
        console_server: ConsoleServer, alice_key: AccessKey, page: Page) -> None:
    # A stand-in of the console's sign-in form (the agreed field names), answered by the
    # browser itself: the helper fills it, submits it and waits for the jobs page.
    posted: list[str] = []

    def answer(route: Route) -> None:
        request = route.request
        if request.method == "POST":
            posted.append(request.post_data or "")
            # (Playwright does not route the request a redirect makes: a refresh instead.)
            route.fulfill(status=200, content_type="text/html",
                          body="<meta http-equiv=refresh content='0;url=/console/jobs'>")
        elif request.url.endswith("/console/jobs"):
            route.fulfill(status=200, content_type="text/html", body="<h1>Jobs</h1>")
        else:
            route.fulfill(status=200, content_type="text/html", body=(
                "<form method=post action=/console/sign-in><input name=key_id>"
                "<input name=secret type=password><button>Sign in</button></form>"))

    page.route(f"{console_server.console}/**", answer)
    sign_in(page, console_server.url, alice_key)
    assert page.url == f"{console_server.console}/jobs"
    assert posted == [urlencode({"key_id": alice_key.id, "secret": alice_key.secret})]


def test_a_missing_browser_is_a_skip_or_with_required_a_failure(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(browser_rig, "CHROMIUM", tmp_path / "chromium")
    assert "Debian's Chromium" in (browser_rig.missing_browser() or "")
    monkeypatch.setenv("BATCHYARD_BROWSER_TESTS", "required")
    assert browser_rig.browser_required()
    monkeypatch.setenv("BATCHYARD_BROWSER_TESTS", "")
    assert not browser_rig.browser_required()


def _bench_module(name: str) -> ModuleType:
    """A script of bench/ (not a package) as a module."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}",
                                                  REPOSITORY / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_the_console_benchmark_data_reads_back_in_its_mixed_states(
        tmp_path: Path, database: str, request: pytest.FixtureRequest) -> None:
    console_data = _bench_module("console_data")
    url = request.getfixturevalue("postgres_url") if database == "postgresql" else ""
    seeded = console_data.seed(tmp_path, jobs=40, instances=200, tenant="carol",
                               database_url=url)
    store = SqlStore(url or Settings(data_dir=tmp_path).resolved_database_url)
    reads = store.reads
    try:
        listed = reads.list_jobs("carol", Window(limit=100)).items
        assert [job.id for job in listed] == [seeded.big_job_id, *reversed(seeded.job_ids)]
        assert reads.list_jobs("someone-else", Window()).items == []
        small = Counter(job.state for job in listed[1:])
        # 20 jobs of each kind in turn: 12 Finished, 2 Failed, 1 Stopped, 1 Running, 4 Waiting
        assert small == {State.FINISHED: 24, State.FAILED: 4, State.STOPPED: 2,
                         State.RUNNING: 2, State.WAITING: 8}
        for job in listed[1:]:
            counts = Counter({job.state: 1})
            assert job.instance_metrics == Metrics.from_counts(dict(counts)), job
        failed = next(job for job in listed if job.state is State.FAILED)
        assert failed.message and reads.attempts(failed.id, "work", 0)[0].exit_code == 1

        big = reads.job(seeded.big_job_id, "carol")
        assert big is not None and big.state is State.RUNNING
        tasks = {task.name: task for task in reads.tasks(seeded.big_job_id)}
        assert {name: task.state for name, task in tasks.items()} == {
            "prepare": State.FINISHED, "work": State.RUNNING, "report": State.WAITING}
        # 120 of 200 ended (every 20th Failed), 6 Running, 74 Waiting
        assert tasks["work"].instance_metrics == Metrics(waiting=74, running=6,
                                                         finished=114, failed=6)
        assert tasks["report"].instance_metrics == Metrics(waiting=1)
        page = reads.list_instances(seeded.big_job_id, "work",
                                    Window(state=State.FAILED, limit=10))
        assert [instance.instance_id for instance in page.items] == [19, 39, 59, 79, 99, 119]
        every = reads.instances(seeded.big_job_id, "work")
        assert Counter(i.state for i in every) == {State.FINISHED: 114, State.FAILED: 6,
                                                   State.RUNNING: 6, State.WAITING: 74}
        running = reads.instance(seeded.big_job_id, "work", 120)
        assert running is not None and running.state is State.RUNNING and running.attempts == 1
        assert seeded.key.tenant == "carol" and seeded.key.secret
    finally:
        store.close()
