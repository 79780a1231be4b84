"""The console's defences over plain HTTP (a real server, no browser): sign-in, the session
cookie, CSRF, tenant isolation, escaping and the security headers. Each test fails without
the defence it names."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchyard.adapters.credentials import AccessKey
from batchyard.cli.keys import open_key_store
from batchyard.settings import Settings
from tests.api.conftest import Signer, job_body, serving, wait_for_state


@dataclass(frozen=True)
class Console:
    url: str
    alice: AccessKey
    bob: AccessKey
    data_dir: Path


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    data_dir = tmp_path_factory.mktemp("console")
    settings = Settings(data_dir=data_dir, slots=2, log_interval=0.5)
    keys = open_key_store(settings)
    alice, bob = keys.create("alice", "console"), keys.create("bob", "console")
    with serving(settings, console=True) as url:
        yield Console(url, alice, bob, data_dir)


def browser(console: Console) -> httpx.Client:
    return httpx.Client(base_url=console.url, timeout=30, follow_redirects=False)


def sign_in(client: httpx.Client, key: AccessKey, secret: str | None = None) -> httpx.Response:
    form = client.get("/console/sign-in")
    token = re.search(r'name="token" value="([^"]+)"', form.text)
    assert token is not None
    return client.post("/console/sign-in", data={
        "key_id": key.id, "secret": key.secret if secret is None else secret,
        "token": token.group(1)})


def csrf_of(client: httpx.Client, path: str = "/console/jobs") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found is not None
    return found.group(1)


def api(console: Console, key: AccessKey) -> httpx.Client:
    return httpx.Client(base_url=console.url, auth=Signer(key.id, key.secret), timeout=30)


def submit(console: Console, key: AccessKey, body: dict[str, Any]) -> str:
    with api(console, key) as client:
        answer = client.post("/jobs", json=body)
        assert answer.status_code == 201, answer.text
        job_id: str = answer.json()["Id"]
        return job_id


# ---- sign-in and the session -----------------------------------------------------------


def test_pages_need_a_session_and_send_the_visitor_to_sign_in(console: Console) -> None:
    with browser(console) as client:
        answer = client.get("/console/jobs?state=failed")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/console/sign-in?next=/console/jobs%3Fstate%3Dfailed"
        assert client.get("/console/jobs", headers={"HX-Request": "true"}).headers[
            "HX-Redirect"].startswith("/console/sign-in")


def test_a_wrong_secret_is_refused_and_sets_no_session(console: Console) -> None:
    with browser(console) as client:
        answer = sign_in(client, console.alice, secret="not-the-secret")
        assert answer.status_code == 403
        assert "do not match an active key" in answer.text
        assert "batchyard_console" not in client.cookies
        assert client.get("/console/jobs").status_code == 303


def test_the_session_cookie_is_http_only_same_site_and_scoped(console: Console) -> None:
    with browser(console) as client:
        answer = sign_in(client, console.alice)
        assert answer.status_code == 303 and answer.headers["location"] == "/console/jobs"
        cookie = next(value for value in answer.headers.get_list("set-cookie")
                      if value.startswith("batchyard_console="))
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite", "path", "max-age"} <= attributes
        assert "samesite=lax" in cookie.lower() and "path=/console" in cookie.lower()
        assert client.get("/console/jobs").status_code == 200


def test_a_forged_or_altered_cookie_is_refused(console: Console) -> None:
    with browser(console) as client:
        sign_in(client, console.bob)
        real = client.cookies["batchyard_console"]
        payload, rest = real.split(".", 1)
        forged = payload.replace(payload[:4], "eyJ1") + "." + rest  # another payload, old MAC
        client.cookies.set("batchyard_console", forged, path="/console")
        assert client.get("/console/jobs").status_code == 303


def test_sign_in_needs_the_form_token_so_no_site_can_sign_a_visitor_in(
        console: Console) -> None:
    with browser(console) as client:
        answer = client.post("/console/sign-in", data={
            "key_id": console.alice.id, "secret": console.alice.secret, "token": "made-up"})
        assert answer.status_code == 403 and "CsrfRefused" in answer.text
        assert "batchyard_console" not in client.cookies


def test_sign_in_goes_back_only_to_a_console_page(console: Console) -> None:
    with browser(console) as client:
        form = client.get("/console/sign-in?next=https://evil.example/")
        assert 'name="next" value=""' in form.text
        token = re.search(r'name="token" value="([^"]+)"', form.text)
        assert token is not None
        answer = client.post("/console/sign-in", data={
            "key_id": console.alice.id, "secret": console.alice.secret,
            "token": token.group(1), "next": "//evil.example/console/"})
        assert answer.headers["location"] == "/console/jobs"


def test_signing_out_ends_the_session_even_for_a_copy_of_the_cookie(console: Console) -> None:
    with browser(console) as client:
        sign_in(client, console.alice)
        copy = client.cookies["batchyard_console"]
        answer = client.post("/console/sign-out", data={"csrf": csrf_of(client)})
        assert answer.status_code == 303
    with browser(console) as thief:
        thief.cookies.set("batchyard_console", copy, path="/console")
        assert thief.get("/console/jobs").status_code == 303


def test_a_revoked_key_ends_its_sessions(console: Console) -> None:
    keys = open_key_store(Settings(data_dir=console.data_dir))
    short_lived = keys.create("alice", "revoked in a test")
    with browser(console) as client:
        sign_in(client, short_lived)
        assert client.get("/console/jobs").status_code == 200
        keys.revoke(short_lived.id)
        assert client.get("/console/jobs").status_code == 303


# ---- CSRF ----------------------------------------------------------------------------------


def test_actions_without_the_csrf_token_are_refused_and_change_nothing(
        console: Console) -> None:
    job_id = submit(console, console.alice, job_body("csrf-target", "sleep 30"))
    with browser(console) as client, api(console, console.alice) as signed:
        sign_in(client, console.alice)
        for data in ({}, {"csrf": "wrong"}):
            answer = client.post(f"/console/jobs/{job_id}/stop", data=data)
            assert answer.status_code == 403 and "CsrfRefused" in answer.text
        assert signed.get(f"/jobs/{job_id}").json()["State"] in {"Waiting", "Running"}
        token = csrf_of(client)
        refused = client.post(f"/console/jobs/{job_id}/stop", data={"csrf": token},
                              headers={"Origin": "https://evil.example"})
        assert refused.status_code == 403
        assert signed.get(f"/jobs/{job_id}").json()["State"] in {"Waiting", "Running"}
        done = client.post(f"/console/jobs/{job_id}/stop", data={"csrf": token},
                           headers={"Origin": console.url})
        assert done.status_code == 303
        assert wait_for_state(signed, job_id, {"Stopped"})["State"] == "Stopped"


def test_the_csrf_token_of_one_session_does_not_work_in_another(console: Console) -> None:
    job_id = submit(console, console.alice, job_body("csrf-other-session", "sleep 30"))
    with browser(console) as first, browser(console) as second:
        sign_in(first, console.alice)
        sign_in(second, console.alice)
        answer = second.post(f"/console/jobs/{job_id}/stop", data={"csrf": csrf_of(first)})
        assert answer.status_code == 403
        second.post(f"/console/jobs/{job_id}/stop", data={"csrf": csrf_of(second)})


# ---- tenants ------------------------------------------------------------------------------


def test_another_tenants_job_reads_as_missing_everywhere(console: Console) -> None:
    job_id = submit(console, console.alice, job_body("alice-only", "echo secret-output"))
    with api(console, console.alice) as signed:
        wait_for_state(signed, job_id, {"Finished"})
    base = f"/console/jobs/{job_id}"
    with browser(console) as client:
        sign_in(client, console.bob)
        token = csrf_of(client)
        for path in (base, f"{base}/tasks/work/instances", f"{base}/tasks/work/instances/0",
                     f"{base}/tasks/work/instances/0/logs/stdout", f"{base}/events",
                     f"{base}/tasks/work/instances/0/live", f"{base}/delete"):
            answer = client.get(path)
            assert answer.status_code == 404, path
            assert "secret-output" not in answer.text and "alice-only" not in answer.text
        for action in ("stop", "start", "delete"):
            assert client.post(f"{base}/{action}", data={"csrf": token}).status_code == 404
        listed = client.get("/console/jobs?name=alice-only")
        assert job_id not in listed.text
    with api(console, console.alice) as signed:
        assert signed.get(f"/jobs/{job_id}").status_code == 200


def test_another_tenants_cluster_reads_as_missing(console: Console) -> None:
    cluster = {"Name": "alice-cluster", "ImageId": "img-ubuntu",
               "InstanceType": "ecs.sn1.medium",
               "Groups": {"group1": {"DesiredVMCount": 0, "InstanceType": "ecs.sn1.medium"}}}
    with api(console, console.alice) as signed:
        cluster_id = signed.post("/clusters", json=cluster).json()["Id"]
    with browser(console) as client:
        sign_in(client, console.bob)
        assert client.get(f"/console/clusters/{cluster_id}").status_code == 404
        assert cluster_id not in client.get("/console/clusters").text
        answer = client.post(f"/console/clusters/{cluster_id}/groups/group1/resize",
                             data={"csrf": csrf_of(client), "desired": "3"})
        assert answer.status_code == 404
    with api(console, console.alice) as signed:
        assert signed.get(f"/clusters/{cluster_id}").json()["Groups"]["group1"][
            "DesiredVMCount"] == 0


# ---- escaping and headers -------------------------------------------------------------------


def test_a_script_in_a_description_a_log_and_an_error_is_shown_as_text(
        console: Console) -> None:
    script = "<script>alert(1)</script>"
    body = job_body("escaped", f"sh -c 'echo \"{script}\"; echo \"{script}\" >&2; exit 3'")
    body["Description"] = script
    body["DAG"]["Tasks"]["work"]["Parameters"]["Command"]["EnvVars"] = {"X": script}
    job_id = submit(console, console.alice, body)
    with api(console, console.alice) as signed:
        wait_for_state(signed, job_id, {"Failed"})
    with browser(console) as client:
        sign_in(client, console.alice)
        pages = [client.get(f"/console/jobs/{job_id}"),
                 client.get(f"/console/jobs/{job_id}/tasks/work/instances/0"),
                 client.get("/console/jobs")]
        for page in pages:
            assert page.status_code == 200
            assert "<script>alert" not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0].text  # the description
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[1].text  # the log
        download = client.get(f"/console/jobs/{job_id}/tasks/work/instances/0/logs/stdout")
        assert download.headers["content-type"].startswith("text/plain")
        assert download.headers["x-content-type-options"] == "nosniff"
        assert download.headers["content-disposition"].startswith("attachment")


def test_pages_carry_a_strict_content_security_policy(console: Console) -> None:
    with browser(console) as client:
        sign_in(client, console.alice)
        for path in ("/console/jobs", "/console/sign-in", "/console/clusters",
                     "/console/submit"):
            headers = client.get(path).headers
            policy = headers["content-security-policy"]
            assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
            assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
            assert headers["x-frame-options"] == "DENY"
        page = client.get("/console/jobs").text
        assert re.search(r"<script(?![^>]*\bsrc=)", page) is None  # no inline script


def test_the_vendored_scripts_are_served_from_the_console_itself(console: Console) -> None:
    with browser(console) as client:
        htmx = client.get("/console/static/htmx.min.js")
        assert htmx.status_code == 200 and 'version:"2.0.10"' in htmx.text
        assert client.get("/console/static/sse.js").status_code == 200
        page = client.get("/console/sign-in").text
        assert re.findall(r'src="([^"]+)"', page) == [
            "/console/static/htmx.min.js", "/console/static/sse.js",
            "/console/static/console.js"]
