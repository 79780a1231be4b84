"""Fixtures of the console's browser tests: one real `batchyard serve` and one Chromium for
the session, a fresh browser context per test, a screenshot of every page a test leaves, and
a failure for any console error or CSP violation the test did not expect (docs/testing.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from batchyard.adapters.credentials import AccessKey
from tests.console.browser import (
    DESKTOP,
    PHONE,
    TIMEOUT_MS,
    ConsoleServer,
    PageWatch,
    browser_required,
    console_server_at,
    launch_options,
    missing_browser,
    screenshot_path,
    unwatch,
    watch,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

WATCHES = pytest.StashKey[list[PageWatch]]()
"""The pages a test opened, checked for console errors when its body ends."""
LOG_MARK = pytest.StashKey[tuple[ConsoleServer, int]]()
"""The server a test uses and the size of its log when the test began."""


@pytest.fixture(scope="package")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    """`batchyard serve` (2 slots, tenants alice and bob, a bucket `<tenant>-data` each)."""
    with console_server_at(tmp_path_factory.mktemp("console")) as server:
        yield server


@pytest.fixture(scope="package")
def alice_key(console_server: ConsoleServer) -> AccessKey:
    return console_server.key("alice")


@pytest.fixture(scope="package")
def bob_key(console_server: ConsoleServer) -> AccessKey:
    return console_server.key("bob")


@pytest.fixture()
def api(console_server: ConsoleServer) -> Iterator[Callable[[AccessKey], httpx.Client]]:
    """`api(key)`: a client of the server's REST API signing as `key`, closed after the test."""
    clients: list[httpx.Client] = []

    def client(key: AccessKey) -> httpx.Client:
        clients.append(console_server.api(key))
        return clients[-1]

    yield client
    for opened in clients:
        opened.close()


@pytest.fixture(autouse=True)
def _server_log_mark(request: pytest.FixtureRequest) -> None:
    """For a test on the server: check it still runs, and mark where its log stood."""
    if "console_server" not in request.fixturenames:
        return
    server: ConsoleServer = request.getfixturevalue("console_server")
    code = server.process.poll()
    assert code is None, f"batchyard serve exited with {code}:\n{server.log_text()}"
    request.node.stash[LOG_MARK] = (server, server.log_size())


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    """Playwright's sync API runs an event loop in this thread while it is started: it is
    stopped when the console's tests are done, so that later tests may run their own."""
    reason = missing_browser()
    if reason is not None:
        if browser_required():
            pytest.fail(f"{reason} (BATCHYARD_BROWSER_TESTS=required)", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    driver = sync_playwright().start()
    yield driver
    driver.stop()


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless (skipped without it, unless BATCHYARD_BROWSER_TESTS=required)."""
    chromium = playwright.chromium.launch(**launch_options())
    yield chromium
    chromium.close()


def _page(request: pytest.FixtureRequest, browser: Browser, suffix: str,
          **context: Any) -> Iterator[Page]:
    """A page in a new context; on teardown, its full-page screenshot."""
    opened = browser.new_context(**context)
    opened.set_default_timeout(TIMEOUT_MS)
    page = opened.new_page()
    request.node.stash.setdefault(WATCHES, []).append(watch(page, request.node.name + suffix))
    try:
        yield page
        if not page.is_closed():
            path = screenshot_path(request.node.name, suffix)
            path.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(path), full_page=True)
    finally:
        unwatch(page)
        opened.close()


@pytest.fixture()
def page(request: pytest.FixtureRequest, browser: Browser) -> Iterator[Page]:
    """A 1280×800 page; its screenshot goes to `<artifacts>/console/<test name>.png`."""
    yield from _page(request, browser, "", viewport=DESKTOP)


@pytest.fixture()
def phone_page(request: pytest.FixtureRequest, browser: Browser) -> Iterator[Page]:
    """A 390×844 mobile page; its screenshot: `<artifacts>/console/<test name>-phone.png`."""
    yield from _page(request, browser, "-phone", viewport=PHONE, is_mobile=True,
                     has_touch=True, device_scale_factor=2)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Fail a test whose pages logged a console error (a CSP violation, a script error, a
    resource that failed to load) or threw, unless it allowed that error."""
    outcome = yield
    problems = [f"{found.name}: {error}" for found in item.stash.get(WATCHES, [])
                for error in found.unexpected()]
    if problems:
        pytest.fail("the page logged errors:\n" + "\n".join(problems), pytrace=False)
    return outcome


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """A failed test's report shows what the server logged meanwhile."""
    report: pytest.TestReport = yield
    mark = item.stash.get(LOG_MARK, None)
    if mark is not None and report.failed:
        server, since = mark
        logged = server.log_text(since)
        report.sections.append(("batchyard serve stderr", logged[-20_000:] or "(nothing)"))
    return report
