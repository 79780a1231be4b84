"""The console read without JavaScript, and a job submitted from an uploaded file."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from batchyard.adapters.credentials import AccessKey
from tests.api.conftest import wait_for_state
from tests.console.browser import ConsoleServer, screenshot_path, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

API = Callable[[AccessKey], httpx.Client]


@pytest.fixture()
def no_script_page(request: pytest.FixtureRequest, browser: Browser) -> Iterator[Page]:
    """A 1280×800 page with JavaScript switched off; its screenshot on teardown."""
    context = browser.new_context(viewport={"width": 1280, "height": 800},
                                  java_script_enabled=False)
    page = context.new_page()
    try:
        yield page
        path = screenshot_path(request.node.name, "-no-script")
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
    finally:
        context.close()


def test_every_page_reads_without_javascript(console_server: ConsoleServer,
                                             alice_key: AccessKey, api: API,
                                             no_script_page: Page) -> None:
    page = no_script_page
    body = console_server.job("alice", "no-script", "echo printed-without-js", count=3)
    job_id = api(alice_key).post("/jobs", json=body).json()["Id"]
    wait_for_state(api(alice_key), job_id, {"Finished"})
    sign_in(page, console_server.url, alice_key)  # a plain form post
    assert page.locator("table.jobs").get_by_role("link", name="no-script").count() == 1
    page.goto(f"{console_server.console}/jobs/{job_id}")
    assert page.locator("#job-state").inner_text() == "Finished"
    assert page.locator("figure.dag svg a").count() == 1
    assert page.locator(".heatmap a").count() == 3
    time = page.locator("time").first
    assert (time.inner_text() or "").endswith("UTC")  # no script: the UTC value itself
    page.locator(".heatmap a").nth(1).click()
    page.wait_for_url(re.compile(r"/instances/1$"))
    assert "printed-without-js" in page.locator("#stdout").inner_text()
    page.goto(f"{console_server.console}/jobs/{job_id}/delete")
    page.get_by_role("button", name="Delete the job").click()  # actions are plain forms
    page.wait_for_url(re.compile(r"/console/jobs\?deleted="))
    assert api(alice_key).get(f"/jobs/{job_id}").status_code == 404


def test_a_job_file_is_uploaded_and_submitted(console_server: ConsoleServer,
                                              alice_key: AccessKey, api: API, page: Page,
                                              tmp_path: Path) -> None:
    job = tmp_path / "uploaded.json"
    body = console_server.job("alice", "uploaded-file", "echo from-a-file")
    job.write_text(json.dumps(body))
    sign_in(page, console_server.url, alice_key)
    page.goto(f"{console_server.console}/submit")
    page.fill("textarea[name=body]", "")
    page.set_input_files("input[name=file]", str(job))
    page.get_by_role("button", name=re.compile("^Submit")).last.click()
    page.wait_for_url(re.compile(r"/console/jobs/job-[0-9A-F]+"))
    job_id = re.search(r"job-[0-9A-F]+", page.url)
    assert job_id is not None
    assert api(alice_key).get(f"/jobs/{job_id.group(0)}").json()["Name"] == "uploaded-file"
