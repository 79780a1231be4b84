"""The webhook outbox of `batchyard serve`: a dispatcher turning new events into deliveries,
and a sender making the HTTP requests (Standard Webhooks). Two threads of their own and a
few workers: nothing here ever runs on the engine's thread or holds it up.

- The dispatcher reads the events after its cursor (`JobQueries.events_since`, every tenant),
  finds each event's job `Notification.Topic` (its description, cached per job), and for a
  subscribed `http(s)://` endpoint adds a delivery; the deliveries and the moved cursor are
  one transaction (`WebhookStore.enqueue`), so a `kill -9` anywhere loses no event and adds
  none twice. It is woken by the engine's transitions and submissions, and looks every
  second anyway (a priority change is no transition).
- The sender attempts each endpoint's oldest pending delivery when it is due, one request
  in flight per endpoint (a later event waits for the earlier one to be delivered or to
  fail for good), in `seq` order per job. The endpoint's host is resolved and checked
  against the address policy before every request (DNS may change), and the request goes
  to the address checked (no second lookup). Redirects are not followed.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx

from batchyard import __version__
from batchyard.documents import time_text
from batchyard.domain.events import event_name, message
from batchyard.domain.states import Transition
from batchyard.domain.webhooks import (
    RETRY_DELAYS,
    SECRET_BYTES,
    TIMEOUT,
    DeliveryState,
    Network,
    Topic,
    Verdict,
    address_problem,
    body,
    classify,
    later_attempt,
    retry_after,
    topic_of,
    url_problem,
    webhook_id,
)
from batchyard.ports.listeners import TransitionListener
from batchyard.ports.reads import InvalidMarker, JobQueries, StreamedEvent
from batchyard.ports.webhooks import (
    Attempted,
    Delivery,
    NewDelivery,
    WebhookMeter,
    WebhookStore,
)

log = logging.getLogger(__name__)
PACE = 0.1
"""Seconds the dispatcher waits at least between two reads that caught up: the engine may
commit a hundred times a second, and each read of the events is a query (on PostgreSQL, a
brief lock of the events table)."""
Resolver = Callable[[str, int], list[str]]
"""A host and port to the addresses it resolves to (OSError when it does not)."""


@dataclass(frozen=True)
class OutboxConfig:
    allowed: Sequence[Network] = ()
    """Non-public networks webhooks may be sent to anyway (`webhook_allow_networks`)."""
    delays: Sequence[float] = RETRY_DELAYS
    timeout: float = TIMEOUT
    poll: float = 1.0
    """Seconds between two looks for new events when nothing woke the dispatcher."""
    batch: int = 500
    """Events handled per transaction."""
    workers: int = 8
    """Requests in flight at once (each to another endpoint)."""


class NoMeter:
    def attempted(self, result: str) -> None:
        return None


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (a literal address: itself)."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


# ---- the dispatcher: events -> deliveries ---------------------------------------------------

class Dispatcher:
    """Adds a delivery for each new event a job's webhook topic subscribes to."""

    def __init__(self, reads: JobQueries, hooks: WebhookStore,
                 clock: Callable[[], float] = time.time, jobs_cached: int = 4096,
                 batch: int = 500) -> None:
        self._reads = reads
        self._hooks = hooks
        self._clock = clock
        self._batch = batch
        self._cached = jobs_cached
        self._jobs: OrderedDict[str, tuple[str, Topic | None]] = OrderedDict()
        """job id -> its tenant and webhook topic (the most recently used jobs)."""

    def step(self) -> bool:
        """Handle one batch of new events; whether more are there already."""
        page = self._reads.events_since(None, self._hooks.cursor(), self._batch)
        if not page.items:
            return False
        deliveries = [new for item in page.items for new in self._deliveries(item)]
        self._hooks.enqueue(deliveries, page.cursor, self._clock())
        return page.more

    def _deliveries(self, item: StreamedEvent) -> list[NewDelivery]:
        event = item.event
        known = self._job(event.job_id)
        name = event_name(event.kind, event.target)
        if known is None or known[1] is None or name is None or name not in known[1].events:
            return []
        tenant, topic = known[0], known[1]
        data = message(event, item.job_name, item.seq, time_text(event.time))
        return [NewDelivery(event.id, tenant, topic.endpoint, event.job_id, item.seq,
                            name.value, event.time.timestamp(), data)]

    def _job(self, job_id: str) -> tuple[str, Topic | None] | None:
        known = self._jobs.get(job_id)
        if known is not None:
            self._jobs.move_to_end(job_id)
            return known
        job = self._reads.job(job_id)
        if job is None:
            return None
        known = self._jobs[job_id] = (job.tenant, topic_of(job.description))
        if len(self._jobs) > self._cached:
            self._jobs.popitem(last=False)
        return known


# ---- the sender: deliveries -> requests -----------------------------------------------------

class Sender:
    """Attempts due deliveries, one at a time per endpoint, on a few worker threads."""

    def __init__(self, hooks: WebhookStore, config: OutboxConfig, meter: WebhookMeter,
                 client: httpx.Client, clock: Callable[[], float] = time.time,
                 jitter: Callable[[], float] = random.random,
                 resolver: Resolver = resolve) -> None:
        self._hooks = hooks
        self._config = config
        self._meter = meter
        self._client = client
        self._clock = clock
        self._jitter = jitter
        self._resolve = resolver
        self._busy: set[int] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(config.workers, thread_name_prefix="webhook")
        self.done = threading.Event()
        """Set after each attempt (the sender's loop looks for the endpoint's next)."""

    def step(self) -> int:
        """Start the attempts that are due; how many."""
        with self._lock:
            free = self._config.workers - len(self._busy)
            busy = sorted(self._busy)
        if free <= 0:
            return 0
        due = self._hooks.due(self._clock(), busy, free)
        for delivery in due:
            with self._lock:
                self._busy.add(delivery.endpoint_id)
            self._pool.submit(self._attempt_logged, delivery)
        return len(due)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def _attempt_logged(self, delivery: Delivery) -> None:
        try:
            self.attempt(delivery)
        except Exception:  # the database is down: the delivery stays due, tried again
            log.exception("webhook delivery %s could not be attempted", delivery.id)
        finally:
            with self._lock:
                self._busy.discard(delivery.endpoint_id)
            self.done.set()

    def attempt(self, delivery: Delivery) -> None:
        """One request for `delivery`, and its result recorded."""
        target = self._target(delivery.url)
        if isinstance(target, Refused):
            self._settle(delivery, DeliveryState.FAILED, None, target.reason, "refused")
            return
        status, error, asked = self._post(delivery, target)
        verdict = classify(status)
        if verdict is Verdict.DELIVERED:
            self._settle(delivery, DeliveryState.DELIVERED, status, "", "delivered")
        elif verdict is Verdict.GONE:
            reason = f"{delivery.url} answered 410 Gone: the endpoint is disabled"
            self._settle(delivery, DeliveryState.FAILED, status, reason, "gone")
            self._hooks.disable(delivery.endpoint_id, reason, self._clock())
        else:
            self._retry(delivery, status, error, asked)

    def _retry(self, delivery: Delivery, status: int | None, error: str,
               asked: float | None) -> None:
        failures = delivery.attempts + 1
        delay = later_attempt(failures, self._jitter, asked, self._config.delays)
        if delay is None:
            reason = f"gave up after {failures} attempts: {error}"
            self._settle(delivery, DeliveryState.FAILED, status, reason, "failed")
            return
        now = self._clock()
        self._hooks.record(Attempted(delivery.id, DeliveryState.PENDING, now + delay, status,
                                     error), now)
        self._meter.attempted("retry")

    def _settle(self, delivery: Delivery, state: DeliveryState, status: int | None,
                error: str, result: str) -> None:
        now = self._clock()
        self._hooks.record(Attempted(delivery.id, state, now, status, error), now)
        self._meter.attempted(result)

    def _target(self, url: str) -> Target | Refused:
        """Where to send a request for `url`: its checked address, or why not."""
        problem = url_problem(url)
        if problem is not None:
            return Refused(problem)
        parsed = httpx.URL(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            addresses = self._resolve(parsed.host, port)
        except OSError as error:
            return Target(parsed, "", f"{parsed.host} does not resolve: {error}")
        problem = address_problem(parsed.host, addresses, self._config.allowed)
        if problem is not None:
            return Refused(problem)
        return Target(parsed, addresses[0], "")

    def _post(self, delivery: Delivery, target: Target) -> tuple[int | None, str, float | None]:
        """The answer's status (None: no answer), what went wrong, and its Retry-After."""
        if not target.address:
            return None, target.error, None
        moment = datetime.fromtimestamp(delivery.event_time, UTC)
        text = body(delivery.event_type, time_text(moment), delivery.data)
        now = self._clock()
        headers = self._signed(delivery, text, now)
        headers["host"] = target.url.netloc.decode("ascii")
        try:
            with self._client.stream(
                    "POST", target.url.copy_with(host=target.address), content=text.encode(),
                    headers=headers, timeout=self._config.timeout,
                    extensions={"sni_hostname": target.url.host}) as response:
                status = response.status_code
                asked = retry_after(response.headers.get("retry-after"), self._clock())
        except httpx.HTTPError as error:
            return None, f"{type(error).__name__}: {error}"[:500], None
        problem = "" if 200 <= status < 300 else f"{delivery.url} answered {status}"
        if 300 <= status < 400:
            problem += " (a redirect: not followed; configure the final address)"
        return status, problem, asked

    def _signed(self, delivery: Delivery, text: str, now: float) -> dict[str, str]:
        from standardwebhooks import Webhook

        secrets = self._hooks.signing_secrets(delivery.tenant, now)
        if not secrets:  # none made yet: one is, which the tenant sees by rotating it
            secrets = [self._hooks.rotate_secret(delivery.tenant, os.urandom(SECRET_BYTES),
                                                 now)]
        ident = webhook_id(delivery.event_id)
        moment = datetime.fromtimestamp(int(now), UTC)
        signatures = " ".join(Webhook(secret).sign(ident, moment, text) for secret in secrets)
        return {"content-type": "application/json", "webhook-id": ident,
                "webhook-timestamp": str(int(now)), "webhook-signature": signatures,
                "user-agent": f"batchyard-webhooks/{__version__}"}


@dataclass(frozen=True)
class Target:
    url: httpx.URL
    address: str
    """The checked address to connect to ("" when the host did not resolve)."""
    error: str


@dataclass(frozen=True)
class Refused:
    reason: str


# ---- the two threads ------------------------------------------------------------------------

class Outbox(TransitionListener):
    """The dispatcher and the sender, each on a thread of its own; a transition listener of
    the engine that wakes the dispatcher (it only sets an event: quick)."""

    def __init__(self, dispatcher: Dispatcher, sender: Sender, poll: float = 1.0) -> None:
        self.dispatcher = dispatcher
        self.sender = sender
        self._poll = poll
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._dispatch, name="webhook-dispatcher",
                                          daemon=True),
                         threading.Thread(target=self._send, name="webhook-sender",
                                          daemon=True)]

    def start(self) -> Outbox:
        for thread in self._threads:
            thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self.sender.done.set()
        for thread in self._threads:
            thread.join(30)
        self.sender.close()

    def committed(self, transitions: Sequence[Transition]) -> None:
        self._wake.set()

    def created(self, job_id: str, tenant: str) -> None:
        self._wake.set()

    def removed(self, job_id: str, tenant: str) -> None:
        self._wake.set()

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            more = False
            try:
                more = self.dispatcher.step()
                self.sender.done.set()  # new deliveries may be due at once
            except InvalidMarker:
                log.exception("the webhook outbox's cursor is past every event")
            except Exception:
                log.exception("the webhook dispatcher failed; trying again")
            if not more:
                self._stop.wait(PACE)  # commits close together: one read for them all
                self._wake.wait(self._poll)
                self._wake.clear()

    def _send(self) -> None:
        while not self._stop.is_set():
            started = 0
            try:
                started = self.sender.step()
            except Exception:
                log.exception("the webhook sender failed; trying again")
            if not started:
                self.sender.done.wait(min(self._poll, 0.25))
                self.sender.done.clear()
