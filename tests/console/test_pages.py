"""The console in a real browser (Debian's Chromium) against a real `batchyard serve`: sign in,
submit the log-count example and watch it finish live, the DAG, an instance and its live
log, stop and start, a cluster resized, tenants apart, scripts shown as text, a phone.

Every test leaves a screenshot of its page (`$BATCHYARD_ARTIFACTS/console/`); a console
error or a CSP violation on a page fails its test (tests/console/conftest.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from batchyard.adapters.credentials import AccessKey
from tests.api.conftest import wait_for_state
from tests.console.browser import REPOSITORY, ConsoleServer, allow_console_error, sign_in

if TYPE_CHECKING:
    from playwright.sync_api import Page

LOG_COUNT = REPOSITORY / "examples" / "log-count"
LIVE_MS = 60_000
"""How long a test waits for the page to follow a change by itself (no reload)."""
API = Callable[[AccessKey], httpx.Client]


def mark_page(page: Page) -> None:
    """Mark the document: a reload or a navigation would lose the mark (`still_marked`)."""
    page.evaluate("window.__batchyardMark = 1")


def still_marked(page: Page) -> bool:
    return bool(page.evaluate("window.__batchyardMark === 1"))


def upload_log_count(server: ConsoleServer, folder: Path) -> None:
    """What examples/log-count/run.sh uploads: the generated log and the programs' tarball."""
    data, package = folder / "log-count-data.txt", folder / "worker.tar.gz"
    subprocess.run([sys.executable, str(LOG_COUNT / "gen_data.py"), str(data), "--lines",
                    "3000"], check=True, capture_output=True)
    with tarfile.open(package, "w:gz") as archive:
        for program in sorted((LOG_COUNT / "src").glob("*.py")):
            archive.add(program, arcname=program.name)
    for path in (data, package):
        subprocess.run([sys.executable, "-m", "batchyard.cli", "oss", "cp", str(path),
                        "oss://log-count-demo/log-count/", "--data-dir", str(server.data_dir)],
                       check=True, capture_output=True)


def test_sign_in_submit_log_count_and_watch_it_finish_live(
        console_server: ConsoleServer, alice_key: AccessKey, page: Page,
        tmp_path: Path) -> None:
    upload_log_count(console_server, tmp_path)
    sign_in(page, console_server.url, alice_key)
    page.get_by_role("link", name="Submit a job").first.click()
    page.fill("textarea[name=body]", (LOG_COUNT / "job.json").read_text())
    page.get_by_role("button", name="Check").click()
    assert page.locator("#problems").count() == 0
    page.get_by_role("button", name=re.compile("^Submit")).last.click()
    page.wait_for_url(re.compile(r"/console/jobs/job-[0-9A-F]+"))
    mark_page(page)
    state = page.locator("#job-state")
    state.filter(has_text="Finished").wait_for(timeout=LIVE_MS)
    assert still_marked(page), "the page was reloaded"
    dag = page.locator("figure.dag svg")
    for task in ("split", "count", "merge"):
        assert dag.locator("a", has_text=task).count() == 1
    assert page.locator("table.tasks tbody tr").count() == 3
    # The DAG opens a task's instances: count has three, each a cell of the heat-map.
    dag.locator("a", has_text="count").first.click()
    page.wait_for_url(re.compile(r"task=count"))
    cells = page.locator(".heatmap a")
    assert cells.count() == 3
    cells.nth(2).click()
    page.wait_for_url(re.compile(r"/tasks/count/instances/2$"))
    assert page.locator("#instance-state").inner_text() == "Finished"
    assert page.locator("table.attempts tbody tr").count() == 1
    page.wait_for_selector("pre#stdout, #stdout")


def test_an_instance_log_is_followed_live_and_downloadable(
        console_server: ConsoleServer, alice_key: AccessKey, api: API, page: Page) -> None:
    command = "sh -c 'for i in $(seq 1 40); do echo line-$i; sleep 0.25; done'"
    created = api(alice_key).post("/jobs", json=console_server.job("alice", "live-log",
                                                                    command))
    job_id = created.json()["Id"]
    wait_for_state(api(alice_key), job_id, {"Running"})
    sign_in(page, console_server.url, alice_key)
    page.goto(f"{console_server.console}/jobs/{job_id}/tasks/work/instances/0")
    mark_page(page)
    stdout = page.locator("#stdout")
    stdout.filter(has_text="line-40").wait_for(timeout=LIVE_MS)
    assert still_marked(page), "the page was reloaded"
    text = stdout.inner_text()
    assert [line for line in text.splitlines() if line.startswith("line-")] == [
        f"line-{n}" for n in range(1, 41)], "a line is missing or repeated"
    page.locator("#instance-state").filter(has_text="Finished").wait_for(timeout=LIVE_MS)
    with page.expect_download() as download:
        page.get_by_role("link", name=re.compile(r"^Download")).first.click()
    saved = Path(download.value.path())
    assert saved.read_text().splitlines()[-1] == "line-40"


def test_stop_and_start_a_job(console_server: ConsoleServer, alice_key: AccessKey, api: API,
                              page: Page) -> None:
    created = api(alice_key).post("/jobs", json=console_server.job(
        "alice", "stop-start", "sleep 60", count=2))
    job_id = created.json()["Id"]
    sign_in(page, console_server.url, alice_key)
    page.goto(f"{console_server.console}/jobs/{job_id}")
    page.get_by_role("button", name="Stop").click()
    page.locator("#job-state").filter(has_text="Stopped").wait_for(timeout=LIVE_MS)
    assert api(alice_key).get(f"/jobs/{job_id}").json()["State"] == "Stopped"
    page.fill("input[name=priority]", "7")
    page.get_by_role("button", name="Change").click()
    page.get_by_text("The priority was changed").wait_for()
    page.get_by_role("button", name=re.compile("^Start again")).click()
    page.locator("#job-state").filter(has_text=re.compile("Waiting|Running")).wait_for()
    job = api(alice_key).get(f"/jobs/{job_id}").json()
    assert job["State"] in {"Waiting", "Running"} and job["Priority"] == 7
    page.get_by_role("button", name="Stop").click()
    page.locator("#job-state").filter(has_text="Stopped").wait_for(timeout=LIVE_MS)
    page.get_by_role("link", name="Delete…").click()
    page.get_by_role("button", name="Delete the job").click()
    page.wait_for_url(re.compile(r"/console/jobs\?deleted="))
    assert api(alice_key).get(f"/jobs/{job_id}").status_code == 404


def test_the_jobs_list_filters_and_follows_new_jobs(
        console_server: ConsoleServer, bob_key: AccessKey, api: API, page: Page) -> None:
    sign_in(page, console_server.url, bob_key)
    page.goto(f"{console_server.console}/jobs?name=fresh")
    mark_page(page)
    assert page.locator("table.jobs a[href*='/console/jobs/job-']").count() == 0
    created = api(bob_key).post("/jobs", json=console_server.job("bob", "fresh-one"))
    job_id = created.json()["Id"]
    page.locator("table.jobs").get_by_role("link", name="fresh-one").wait_for(timeout=LIVE_MS)
    assert still_marked(page)
    wait_for_state(api(bob_key), job_id, {"Finished"})
    page.goto(f"{console_server.console}/jobs?state=finished&name=fresh")
    assert page.locator("table.jobs").get_by_role("link", name="fresh-one").count() == 1
    page.goto(f"{console_server.console}/jobs?state=failed&name=fresh")
    assert page.locator("table.jobs").get_by_role("link", name="fresh-one").count() == 0


def test_resize_a_cluster(console_server: ConsoleServer, alice_key: AccessKey, api: API,
                          page: Page) -> None:
    sign_in(page, console_server.url, alice_key)
    page.goto(f"{console_server.console}/clusters")
    page.locator("details.create summary").click()
    body = {"Name": "web-resized", "ImageId": "img-ubuntu", "InstanceType": "ecs.sn1.medium",
            "Groups": {"group1": {"DesiredVMCount": 1, "InstanceType": "ecs.sn1.medium"}}}
    page.fill("#cluster-body", json.dumps(body))
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r"/console/clusters/cls-"))
    cluster_id = page.url.rsplit("/", 1)[1]
    page.fill("input[name=desired]", "2")
    page.get_by_role("button", name="Resize").click()
    page.locator(".desired").filter(has_text="2").wait_for()
    page.locator(".actual").filter(has_text="2").wait_for(timeout=LIVE_MS)
    groups = api(alice_key).get(f"/clusters/{cluster_id}").json()["Groups"]
    assert groups["group1"]["DesiredVMCount"] == 2
    page.get_by_role("link", name="Delete…").click()
    page.get_by_role("button", name="Delete the cluster").click()
    page.wait_for_url(re.compile(r"/console/clusters\?deleted="))


def test_another_tenants_job_is_not_found(console_server: ConsoleServer, alice_key: AccessKey,
                                          bob_key: AccessKey, api: API, page: Page) -> None:
    job_id = api(alice_key).post("/jobs", json=console_server.job("alice", "private")).json()[
        "Id"]
    sign_in(page, console_server.url, bob_key)
    allow_console_error(page, r"status of 404")
    answer = page.goto(f"{console_server.console}/jobs/{job_id}")
    assert answer is not None and answer.status == 404
    assert "does not exist" in page.inner_text("main")


def test_scripts_in_a_description_and_a_log_are_text(
        console_server: ConsoleServer, alice_key: AccessKey, api: API, page: Page) -> None:
    script = "<script>window.__pwned = 1</script><img src=x onerror=window.__pwned=2>"
    body = console_server.job("alice", "escaped", f"echo '{script}'")
    body["Description"] = script
    job_id = api(alice_key).post("/jobs", json=body).json()["Id"]
    wait_for_state(api(alice_key), job_id, {"Finished"})
    sign_in(page, console_server.url, alice_key)
    page.goto(f"{console_server.console}/jobs/{job_id}")
    page.locator("details.description summary").click()
    assert script in page.locator("pre.json").inner_text()
    page.goto(f"{console_server.console}/jobs/{job_id}/tasks/work/instances/0")
    assert script in page.locator("#stdout").inner_text()
    assert page.evaluate("window.__pwned") is None


def test_the_submit_page_shows_problems_by_json_path(
        console_server: ConsoleServer, alice_key: AccessKey, page: Page) -> None:
    sign_in(page, console_server.url, alice_key)
    allow_console_error(page, r"status of 400")  # a description with problems is a 400 page
    page.goto(f"{console_server.console}/submit")
    job = json.loads((LOG_COUNT / "job.json").read_text())
    job["DAG"]["Tasks"]["count"]["InstanceCount"] = -1
    job["DAG"]["Tasks"]["count"]["InstanceCont"] = 3
    page.fill("textarea[name=body]", json.dumps(job, indent=2))
    page.get_by_role("button", name="Check").click()
    problems = page.locator("#problems")
    assert "DAG.Tasks.count.InstanceCount" in problems.inner_text()
    page.fill("textarea[name=body]", "{\"Name\": ")
    page.get_by_role("button", name="Check").click()
    assert "not valid JSON" in page.locator("#problems").inner_text()
    del job["DAG"]["Tasks"]["count"]["InstanceCount"]
    job["DAG"]["Tasks"]["count"]["InstanceCount"] = 1
    page.fill("textarea[name=body]", json.dumps(job, indent=2))
    page.get_by_role("button", name="Check").click()
    assert "InstanceCont" in page.locator("#warnings").inner_text()


@pytest.mark.parametrize("path", ["/jobs", "/submit", "/clusters"])
def test_pages_fit_a_phone(console_server: ConsoleServer, alice_key: AccessKey,
                           phone_page: Page, path: str) -> None:
    sign_in(phone_page, console_server.url, alice_key)
    phone_page.goto(f"{console_server.console}{path}")
    width = phone_page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"{path} is {width} px wide on a 390 px screen"


def test_a_job_page_fits_a_phone(console_server: ConsoleServer, alice_key: AccessKey, api: API,
                                 phone_page: Page) -> None:
    job_id = api(alice_key).post("/jobs", json=console_server.job(
        "alice", "phone-job", count=30)).json()["Id"]
    wait_for_state(api(alice_key), job_id, {"Finished"})
    sign_in(phone_page, console_server.url, alice_key)
    phone_page.goto(f"{console_server.console}/jobs/{job_id}")
    assert phone_page.evaluate("document.documentElement.scrollWidth") <= 390
    phone_page.goto(f"{console_server.console}/jobs/{job_id}/tasks/work/instances/3")
    assert phone_page.evaluate("document.documentElement.scrollWidth") <= 390


def test_times_show_in_the_browsers_zone_with_utc_on_hover(
        console_server: ConsoleServer, alice_key: AccessKey, browser: object,
        api: API, request: pytest.FixtureRequest) -> None:
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    job_id = api(alice_key).post("/jobs", json=console_server.job("alice", "zoned")).json()[
        "Id"]
    context = browser.new_context(timezone_id="Asia/Shanghai", locale="en-GB")
    try:
        page = context.new_page()
        sign_in(page, console_server.url, alice_key)
        page.goto(f"{console_server.console}/jobs/{job_id}")
        created = page.locator("time").first
        utc = created.get_attribute("title")
        assert utc is not None and utc.endswith("UTC")
        shown = created.inner_text()
        assert shown != utc and "UTC" not in shown
        hour_utc = int(utc.split()[1].split(":")[0])
        assert f"{(hour_utc + 8) % 24:02d}:" in shown, (shown, utc)
    finally:
        context.close()


def test_actions_are_reachable_by_keyboard(console_server: ConsoleServer, alice_key: AccessKey,
                                           api: API, page: Page) -> None:
    job_id = api(alice_key).post("/jobs", json=console_server.job(
        "alice", "keyboard", "sleep 60")).json()["Id"]
    sign_in(page, console_server.url, alice_key)
    page.goto(f"{console_server.console}/jobs/{job_id}")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.trim()") == "Stop":
            break
    else:
        pytest.fail("Tab never reached the Stop button")
    page.keyboard.press("Enter")
    page.locator("#job-state").filter(has_text="Stopped").wait_for(timeout=LIVE_MS)
