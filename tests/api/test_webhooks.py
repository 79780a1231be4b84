"""Webhooks against a real `batchyard serve` and a real receiver on 127.0.0.1 that verifies
every signature with `standardwebhooks`: every event of a DAG job in order, a receiver down
then up, 410, a redirect, refused addresses, replays, secrets and their rotation, tenants
apart, and a `kill -9` of the server between a transition and its delivery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from batchyard.cli.keys import open_key_store
from batchyard.domain.events import JOB_EVENTS
from batchyard.settings import BucketGrant, Settings
from tests.api.conftest import Signer, echo_task, serving, wait_for_state
from tests.api.test_client_cli import command
from tests.api.test_events import all_events, dag_job, submitted
from tests.api.test_serve import LAUNCH, free_port, wait_until_up
from tests.api.webhook_receiver import Receiver

ENDED = {"Finished", "Failed", "Stopped"}
EVERY_EVENT = sorted(name.value for name in JOB_EVENTS)
SHORT_DELAYS = [0, 0.2, 0.2, 0.3, 0.3, 0.5, 0.5, 0.5]


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    """A server that may call 127.0.0.1 (only), with a schedule of a few seconds."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("hooks"), slots=4,
                        bucket_grants={"api-tests": BucketGrant(owner="t", write=["*"])},
                        webhook_allow_networks=["127.0.0.1/32"],
                        webhook_retry_delays=SHORT_DELAYS)
    with serving(settings) as url:
        yield url, settings


def client_of(hooked: tuple[str, Settings], tenant: str) -> httpx.Client:
    url, settings = hooked
    key = open_key_store(settings).create(tenant, "webhook tests")
    return httpx.Client(base_url=url, auth=Signer(key.id, key.secret), timeout=30)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver().start()
    yield found
    found.stop()


def hooked_job(url: str, events: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    body = dag_job("hooked")
    topic: dict[str, Any] = {"Name": "t", "Endpoint": url}
    if events is not None:
        topic["Events"] = events
    return {**body, "Notification": {"Topic": topic}, **fields}


def new_secret(client: httpx.Client) -> str:
    answer = client.post("/webhooks/secret")
    assert answer.status_code == 201, answer.text
    secret: str = answer.json()["Secret"]
    assert secret.startswith("whsec_")
    return secret


def deliveries(client: httpx.Client, state: str = "") -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    marker = ""
    while True:
        answer = client.get("/webhooks/deliveries",
                            params={"State": state, "Marker": marker, "MaxItemCount": 3})
        assert answer.status_code == 200, answer.text
        items += answer.json()["Items"]
        marker = answer.json()["NextMarker"]
        if not marker:
            return items


def until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_every_event_of_a_dag_job_arrives_signed_once_in_seq_order(
        hooked: tuple[str, Settings], receiver: Receiver) -> None:
    with client_of(hooked, "hooks-all") as client:
        receiver.secrets = [new_secret(client)]
        job_id = submitted(client, hooked_job(receiver.url, EVERY_EVENT))
        assert wait_for_state(client, job_id, ENDED)["State"] == "Finished"
        events, _ = all_events(client, job_id=job_id)
        got = receiver.wait_for({f"evt_{item['Id']}" for item in events})
        assert receiver.unverified == []
        assert [item.body["data"]["Seq"] for item in got] == [item["Seq"] for item in events]
        for item, event in zip(got, events, strict=True):
            assert item.body["type"] == event["Type"] == item.body["data"]["Event"]
            assert item.body["data"] == {key: value for key, value in event.items()
                                         if key not in ("Id", "Type")}
            assert item.body["timestamp"] == event["Time"] and item.path == "/hook"
        listed = deliveries(client, "Delivered")
        assert len(listed) == len(events) and {d["JobId"] for d in listed} == {job_id}
        assert all(d["Attempts"] == 1 and d["LastStatus"] == 200 for d in listed)
        metrics = {sample.labels.get("result", sample.name): sample.value
                   for family in text_string_to_metric_families(
                       httpx.get(f"{hooked[0]}/metrics").text)
                   if family.name.startswith("batchyard_webhook") for sample in family.samples}
        assert metrics["delivered"] >= len(events)
        assert "batchyard_webhook_backlog" in metrics


def test_instance_events_only_when_listed(hooked: tuple[str, Settings],
                                          receiver: Receiver) -> None:
    with client_of(hooked, "hooks-default") as client:
        receiver.secrets = [new_secret(client)]
        job_id = submitted(client, hooked_job(receiver.url))
        assert wait_for_state(client, job_id, ENDED)["State"] == "Finished"
        events, _ = all_events(client, job_id=job_id)
        wanted = {f"evt_{item['Id']}" for item in events
                  if not item["Type"].startswith("OnInstance")}
        got = receiver.wait_for(wanted)
        time.sleep(0.5)
        assert {item.id for item in receiver.unique()} == wanted and got


def test_a_receiver_down_for_a_while_then_up_gets_every_event(
        hooked: tuple[str, Settings], receiver: Receiver) -> None:
    with client_of(hooked, "hooks-down") as client:
        receiver.secrets = [new_secret(client)]
        receiver.stop()
        job_id = submitted(client, hooked_job(receiver.url, ["OnJobWaiting", "OnJobRunning",
                                                             "OnJobFinished"]))
        assert wait_for_state(client, job_id, ENDED)["State"] == "Finished"
        until(lambda: any(d["Attempts"] >= 2 for d in deliveries(client, "Pending")))
        head, *waiting = deliveries(client, "Pending")
        assert head["Type"] == "OnJobWaiting" and head["LastStatus"] == 0
        assert "ConnectError" in head["LastError"]
        assert [d["Attempts"] for d in waiting] == [0, 0]  # behind the endpoint's first
        receiver.start()
        got = receiver.wait_for({d["WebhookId"] for d in deliveries(client)})
        assert [item.body["type"] for item in got] == ["OnJobWaiting", "OnJobRunning",
                                                       "OnJobFinished"]
        until(lambda: len(deliveries(client, "Delivered")) == 3)


def test_410_disables_the_endpoint_and_the_event_is_kept_failed_then_replayed(
        hooked: tuple[str, Settings], receiver: Receiver) -> None:
    with client_of(hooked, "hooks-gone") as client:
        receiver.secrets = [new_secret(client)]
        receiver.answer(410)
        job_id = submitted(client, hooked_job(receiver.url, ["OnJobWaiting", "OnJobFinished"]))
        assert wait_for_state(client, job_id, ENDED)["State"] == "Finished"
        until(lambda: len(deliveries(client, "Failed")) == 2)
        first, second = deliveries(client, "Failed")
        assert (first["Type"], first["LastStatus"], first["Attempts"]) == ("OnJobWaiting",
                                                                          410, 1)
        assert "410" in first["LastError"] and "disabled" in first["LastError"]
        assert second["Type"] == "OnJobFinished" and second["Attempts"] == 0
        assert len(receiver.received) == 1

        receiver.answer(204)
        answer = client.post(f"/webhooks/deliveries/{first['Id']}/replay")
        assert answer.status_code == 200 and answer.json() == {"Replayed": [first["Id"]]}
        receiver.wait_for({first["WebhookId"]})
        until(lambda: len(deliveries(client, "Delivered")) == 1)
        again = client.post(f"/webhooks/deliveries/{first['Id']}/replay")
        assert again.status_code == 409 and again.json()["Code"] == "StateConflict"
        answer = client.post("/webhooks/deliveries/replay",
                             json={"From": int(first["Id"]), "To": int(second["Id"])})
        assert answer.json() == {"Replayed": [second["Id"]]}
        got = receiver.wait_for({first["WebhookId"], second["WebhookId"]})
        assert [item.body["type"] for item in got] == ["OnJobWaiting", "OnJobFinished"]
        until(lambda: len(deliveries(client, "Delivered")) == 2)


def test_a_redirect_is_not_followed_and_retries_end_failed(
        hooked: tuple[str, Settings], receiver: Receiver) -> None:
    with client_of(hooked, "hooks-redirect") as client:
        receiver.secrets = [new_secret(client)]
        receiver.answer(302, location=f"http://127.0.0.1:{receiver.port}/elsewhere")
        job_id = submitted(client, hooked_job(receiver.url, ["OnJobWaiting"]))
        assert wait_for_state(client, job_id, ENDED)["State"] == "Finished"
        until(lambda: len(deliveries(client, "Failed")) == 1)
        failed, = deliveries(client, "Failed")
        assert failed["Attempts"] == len(SHORT_DELAYS) and failed["LastStatus"] == 302
        assert "redirect" in failed["LastError"] and "gave up" in failed["LastError"]
        assert {item.path for item in receiver.received} == {"/hook"}
        assert len(receiver.received) == len(SHORT_DELAYS)


def test_retry_after_is_honoured(hooked: tuple[str, Settings], receiver: Receiver) -> None:
    with client_of(hooked, "hooks-later") as client:
        receiver.secrets = [new_secret(client)]
        receiver.answer(429, **{"retry-after": "2"})
        submitted(client, hooked_job(receiver.url, ["OnJobWaiting"]))
        until(lambda: len(receiver.received) == 1)
        receiver.answer(200)
        first_at = time.monotonic()
        until(lambda: len(receiver.received) == 2)
        assert time.monotonic() - first_at > 1.5  # not the schedule's 0.2 s


@pytest.mark.parametrize("address", ["10.0.0.1", "127.0.0.2", "169.254.169.254"])
def test_a_private_address_is_refused_and_recorded(hooked: tuple[str, Settings],
                                                   address: str) -> None:
    with client_of(hooked, f"hooks-private-{address.replace('.', '-')}") as client:
        job_id = submitted(client, hooked_job(f"http://{address}:9/hook", ["OnJobWaiting"]))
        until(lambda: len(deliveries(client, "Failed")) == 1)
        failed, = deliveries(client, "Failed")
        assert failed["JobId"] == job_id and failed["LastStatus"] == 0
        assert address in failed["LastError"] and "webhook_allow_networks" in failed["LastError"]


def test_a_rotated_secret_and_the_old_one_both_sign(hooked: tuple[str, Settings],
                                                      receiver: Receiver) -> None:
    with client_of(hooked, "hooks-rotate") as client:
        assert client.get("/webhooks/secret").json() == {"Exists": False, "CreationTime": ""}
        old = new_secret(client)
        rotated = client.post("/webhooks/secret").json()
        assert rotated["Rotated"] is True and rotated["Secret"] != old
        shown = client.get("/webhooks/secret").json()
        assert shown["Exists"] and shown["CreationTime"] == rotated["CreationTime"]
        assert old not in str(shown) and rotated["Secret"] not in str(shown)
        for secret in (old, rotated["Secret"]):
            receiver.secrets = [secret]
            submitted(client, hooked_job(receiver.url, ["OnJobWaiting"]))
        until(lambda: len(receiver.received) + len(receiver.unverified) == 2)
        assert receiver.unverified == [] and len(receiver.received) == 2
        signatures = receiver.received[0].headers["webhook-signature"].split(" ")
        assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)


def test_tenants_see_and_replay_only_their_own(hooked: tuple[str, Settings]) -> None:
    with client_of(hooked, "hooks-mine") as mine, client_of(hooked, "hooks-theirs") as theirs:
        submitted(mine, hooked_job("http://10.0.0.1:9/", ["OnJobWaiting"]))
        until(lambda: len(deliveries(mine, "Failed")) == 1)
        failed, = deliveries(mine, "Failed")
        assert deliveries(theirs) == []
        answer = theirs.post(f"/webhooks/deliveries/{failed['Id']}/replay")
        assert answer.status_code == 404
        assert theirs.post("/webhooks/deliveries/replay",
                           json={"From": 1, "To": 10**9}).json() == {"Replayed": []}


@pytest.mark.parametrize(("call", "code"), [
    (("GET", "/webhooks/deliveries?State=Lost"), "InvalidState"),
    (("GET", "/webhooks/deliveries?Marker=x"), "InvalidMarker"),
    (("POST", "/webhooks/deliveries/abc/replay"), "InvalidResource.NotFound"),
    (("POST", "/webhooks/deliveries/99999999999999999999999/replay"),
     "InvalidResource.NotFound")])
def test_bad_input_is_named(hooked: tuple[str, Settings], call: tuple[str, str],
                            code: str) -> None:
    with client_of(hooked, "hooks-bad") as client:
        answer = client.request(*call)
        assert answer.status_code in (400, 404) and answer.json()["Code"] == code, answer.text


@pytest.mark.parametrize(("body", "code"), [
    ({"From": 5, "To": 2}, "InvalidTo"), ({"From": 0, "To": 2}, "InvalidFrom"),
    ({"From": "x", "To": 2}, "InvalidFrom"), ({"To": 2}, "MissingFrom"),
    ({"From": 1, "To": 2, "Else": 1}, "InvalidElse")])
def test_a_bad_range_is_named(hooked: tuple[str, Settings], body: dict[str, Any],
                              code: str) -> None:
    with client_of(hooked, "hooks-bad") as client:
        answer = client.post("/webhooks/deliveries/replay", json=body)
        assert answer.status_code == 400 and answer.json()["Code"] == code, answer.text


def test_the_webhook_calls_need_a_signature(hooked: tuple[str, Settings]) -> None:
    for method, path in (("GET", "/webhooks/secret"), ("POST", "/webhooks/secret"),
                         ("GET", "/webhooks/deliveries")):
        assert httpx.request(method, hooked[0] + path).status_code in (400, 401, 403)


def test_kill_9_between_a_transition_and_its_delivery_loses_nothing(
        tmp_path: Path, receiver: Receiver) -> None:
    data_dir, port = tmp_path / "data", free_port()
    environment = {**os.environ, "BATCHYARD_WEBHOOK_ALLOW_NETWORKS": '["127.0.0.1/32"]',
                   "BATCHYARD_WEBHOOK_RETRY_DELAYS": "[0, 0.2, 0.2, 0.2, 0.2, 0.2, 30, 30]"}
    code = LAUNCH.format(port=port, data_dir=str(data_dir))

    def start() -> subprocess.Popen[str]:
        process = subprocess.Popen([sys.executable, "-c", code], text=True, env=environment,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_up(f"http://127.0.0.1:{port}", process)
        return process

    server = start()
    try:
        key = open_key_store(Settings(data_dir=data_dir)).create("hooks-kill", "kill test")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=Signer(key.id, key.secret),
                          timeout=30) as client:
            receiver.secrets = [new_secret(client)]
            receiver.stop()  # nothing can be delivered before the kill
            body = {**hooked_job(receiver.url, EVERY_EVENT),
                    "DAG": {"Tasks": {"only": echo_task("echo one", 2)}, "Dependencies": {}}}
            job_id = submitted(client, body)
            until(lambda: client.get(f"/jobs/{job_id}").json()["State"] in ENDED)
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            receiver.start()
            server = start()
            events, _ = all_events(client, job_id=job_id)
            assert events[-1]["Type"] == "OnJobFinished"
            got = receiver.wait_for({f"evt_{item['Id']}" for item in events}, timeout=60)
            assert [item.body["data"]["Seq"] for item in got] == [e["Seq"] for e in events]
            assert receiver.unverified == []
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)


def cli(hooked: tuple[str, Settings], tenant: str, folder: Path,
        *arguments: str) -> subprocess.CompletedProcess[str]:
    url, settings = hooked
    key = open_key_store(settings).create(tenant, "webhook CLI tests")
    inherited = {name: value for name, value in os.environ.items()
                 if not name.startswith("BATCHYARD_")}
    environment = {**inherited, "BATCHYARD_ENDPOINT": url, "BATCHYARD_KEY_ID": key.id,
                   "BATCHYARD_KEY_SECRET": key.secret, "COLUMNS": "120",
                   "BATCHYARD_CLIENT_CONFIG": str(folder / "absent.toml")}
    return subprocess.run([*command(), *arguments], env=environment, capture_output=True,
                          text=True, timeout=60, check=False)


def test_the_cli_makes_the_secret_lists_and_replays(
        hooked: tuple[str, Settings], receiver: Receiver, tmp_path: Path) -> None:
    tenant = "hooks-cli"
    made = cli(hooked, tenant, tmp_path, "webhooks", "secret")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("whsec_") and "not shown again" in made.stderr
    again = cli(hooked, tenant, tmp_path, "webhooks", "secret")
    assert again.returncode == 0 and secret not in again.stdout and "--rotate" in again.stdout
    rotated = cli(hooked, tenant, tmp_path, "webhooks", "secret", "--rotate", "--json")
    assert rotated.returncode == 0 and json.loads(rotated.stdout)["Rotated"] is True
    receiver.secrets = [secret]
    receiver.answer(410)
    with client_of(hooked, tenant) as client:
        submitted(client, hooked_job(receiver.url, ["OnJobWaiting", "OnJobRunning"]))
        until(lambda: len(deliveries(client, "Failed")) == 2)
    listed = cli(hooked, tenant, tmp_path, "webhooks", "deliveries", "--failed", "--json")
    assert listed.returncode == 0, listed.stderr
    first, second = json.loads(listed.stdout)["Items"]
    table = cli(hooked, tenant, tmp_path, "webhooks", "deliveries")
    assert "OnJobWaiting" in table.stdout and "Failed" in table.stdout and "410" in table.stdout
    receiver.answer(200)
    replayed = cli(hooked, tenant, tmp_path, "webhooks", "replay",
                   f"{first['Id']}-{second['Id']}")
    assert replayed.returncode == 0, replayed.stderr
    assert f"replaying 2 deliveries: {first['Id']}, {second['Id']}" in replayed.stdout
    receiver.wait_for({first["WebhookId"], second["WebhookId"]})
    bad = cli(hooked, tenant, tmp_path, "webhooks", "replay", "12-x")
    assert bad.returncode != 0 and "not a delivery id or a range" in bad.stderr
    gone = cli(hooked, tenant, tmp_path, "webhooks", "replay", "999999")
    assert gone.returncode != 0 and "does not exist" in gone.stderr


def test_the_cli_needs_a_server(tmp_path: Path) -> None:
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("BATCHYARD_")}
    environment["BATCHYARD_CLIENT_CONFIG"] = str(tmp_path / "absent.toml")
    answer = subprocess.run([*command(), "webhooks", "deliveries"], env=environment,
                            capture_output=True, text=True, timeout=60, check=False)
    assert answer.returncode != 0 and "--endpoint" in answer.stderr
