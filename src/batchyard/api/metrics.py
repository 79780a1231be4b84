"""Prometheus metrics at `GET /metrics` (docs/operations.md): counts, rates and latencies of
the engine for a scrape every few seconds.

Two kinds of sources, neither on a request's path nor heavy on the engine's:

- `Meter` counts as things happen: attempts started and the queue wait before each (from
  the committed transitions, as a `TransitionListener`), attempts ended by result with how
  long each ran, and the time of each engine step (as the engine's `EngineMeter`). One
  counter increment or histogram observation per attempt, a few dictionary operations per
  transition.
- `Tallies` reads, per scrape, what the store keeps counted: jobs, tasks and instances per
  tenant and state, and cluster VMs per group (desired, in each state, busy). A scrape
  costs a few grouped queries, whatever the number of instances.

`metrics_token` (env BATCHYARD_METRICS_TOKEN) puts the page behind `Authorization: Bearer`;
without it the page is open. It shows counts only: the tenant names are labels (`tenant`),
nothing else of any tenant (no job names, ids or commands).
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.exceptions import HTTPException

from batchyard.adapters.store import SqlStore
from batchyard.adapters.tallies import SqlTallies
from batchyard.domain.states import TERMINAL, Entity, State, Transition
from batchyard.orchestrator.engine import Engine
from batchyard.ports.listeners import TransitionListener
from batchyard.ports.meter import AttemptResult, EngineMeter, GroupTally, StateTally, Tallies
from batchyard.settings import Settings

QUEUE_WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                      3600.0, 14400.0, 86400.0)
"""Seconds from Waiting to an attempt's start: from 10 ms to a day."""
DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
                    86400.0)
"""Seconds an attempt ran: from 100 ms to a day."""
STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Seconds of one engine step: from a millisecond to 10 s."""

Key = tuple[str, str, int | None]
"""An instance: job id, task, instance id."""


class Meter(TransitionListener, EngineMeter):
    """The counters and histograms, fed by the engine's transitions and its meter hooks.

    Queue wait: from the moment an instance became Waiting (its job's submission or
    restart, or its previous attempt's end) to its attempt's start. A job submitted before
    this server started has no known submission time: its first attempts are counted but
    not timed.
    """

    def __init__(self, registry: CollectorRegistry,
                 clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting_since: dict[str, float] = {}
        """Active jobs submitted or restarted while this server ran: since when."""
        self._requeued: dict[Key, float] = {}
        """Instances Waiting again after an attempt (a retry, a lost or recalled attempt)."""
        self.attempts_started = Counter("batchyard_attempts_started", "Attempts started (instances "
                               "moved from Waiting to Running)", registry=registry)
        self.attempts_ended = Counter("batchyard_attempts_ended", "Attempts ended, by result",
                             ["result"], registry=registry)
        for result in AttemptResult:
            self.attempts_ended.labels(result.value)  # every result shows, 0 until it happens
        self.queue_wait = Histogram(
            "batchyard_queue_wait_seconds", "Seconds from an instance becoming Waiting to "
            "its attempt's start", buckets=QUEUE_WAIT_BUCKETS, registry=registry)
        self.duration = Histogram(
            "batchyard_attempt_duration_seconds", "Seconds an attempt ran, start to end, as "
            "its runner reported them (attempts without times left out)",
            buckets=DURATION_BUCKETS, registry=registry)
        self.step = Histogram("batchyard_engine_step_seconds", "Seconds of one engine step "
                              "that did work (applied outcomes, launched)",
                              buckets=STEP_BUCKETS, registry=registry)

    # ---- the engine's meter (its loop thread) --------------------------------------------

    def stepped(self, seconds: float) -> None:
        self.step.observe(seconds)

    def ended(self, result: AttemptResult, seconds: float | None) -> None:
        self.attempts_ended.labels(result.value).inc()
        if seconds is not None:
            self.duration.observe(seconds)

    # ---- the transition listener ---------------------------------------------------------

    def committed(self, transitions: Sequence[Transition]) -> None:
        with self._lock:
            for transition in transitions:
                if transition.entity is Entity.INSTANCE:
                    self._instance_moved(transition)
                elif transition.entity is Entity.JOB:
                    self._job_moved(transition)

    def created(self, job_id: str, tenant: str) -> None:
        with self._lock:
            self._waiting_since.setdefault(job_id, self._clock())

    def removed(self, job_id: str, tenant: str) -> None:
        with self._lock:
            self._waiting_since.pop(job_id, None)
            if self._requeued:
                self._requeued = {key: since for key, since in self._requeued.items()
                                  if key[0] != job_id}

    def _instance_moved(self, transition: Transition) -> None:
        key = (transition.job_id, transition.task, transition.instance_id)
        if transition.target is State.RUNNING:
            self.attempts_started.inc()
            since = self._requeued.pop(key, None)
            if since is None:
                since = self._waiting_since.get(transition.job_id)
            if since is not None:
                self.queue_wait.observe(max(0.0, transition.time - since))
        elif transition.target is State.WAITING and transition.source is State.RUNNING:
            self._requeued[key] = transition.time
        elif transition.source is State.WAITING:
            self._requeued.pop(key, None)

    def _job_moved(self, transition: Transition) -> None:
        if transition.target is State.WAITING:  # restarted (a submission is no transition)
            self._waiting_since[transition.job_id] = transition.time
        elif transition.target in TERMINAL:
            self._waiting_since.pop(transition.job_id, None)


KINDS = {"job": ("batchyard_jobs", "Jobs"), "task": ("batchyard_tasks", "Tasks"),
         "instance": ("batchyard_instances", "Instances")}


class TallyCollector(Collector):
    """Gauges read at each scrape from the store's kept counts and the engine's busy VMs."""

    def __init__(self, tallies: Tallies,
                 busy: Callable[[Sequence[str]], Iterable[str]]) -> None:
        self._tallies = tallies
        self._busy = busy

    def collect(self) -> Iterable[Metric]:
        yield from _state_gauges(self._tallies.states())
        yield from _vm_gauges(self._tallies.groups(), self._busy)


def _state_gauges(tallies: Sequence[StateTally]) -> list[Metric]:
    """Every kind's gauge, with each tenant seen in every state (0 when none)."""
    tenants = sorted({tally.tenant for tally in tallies})
    counts = {(tally.kind, tally.tenant, tally.state): tally.count for tally in tallies}
    families: list[Metric] = []
    for kind, (name, noun) in KINDS.items():
        family = GaugeMetricFamily(name, f"{noun} per tenant and state, now",
                                   labels=["tenant", "state"])
        for tenant in tenants:
            for state in State:
                family.add_metric([tenant, state.value], counts.get((kind, tenant, state), 0))
        families.append(family)
    return families


def _vm_gauges(groups: Sequence[GroupTally],
               busy_of: Callable[[Sequence[str]], Iterable[str]]) -> list[Metric]:
    labels = ["cluster", "tenant", "group"]
    desired = GaugeMetricFamily("batchyard_cluster_vms_desired",
                                "A cluster group's DesiredVMCount", labels=labels)
    actual = GaugeMetricFamily("batchyard_cluster_vms_actual", "A cluster group's Running "
                               "VMs (its ActualVMCount)", labels=labels)
    busy = GaugeMetricFamily("batchyard_cluster_vms_busy", "A cluster group's VMs running "
                             "an instance, as of the engine's last step", labels=labels)
    by_state = GaugeMetricFamily("batchyard_cluster_vms", "A cluster group's VMs per state",
                                 labels=[*labels, "state"])
    busy_vms = set(busy_of([vm_id for group in groups for vm_id in group.vm_ids]))
    for group in groups:
        names = [group.cluster_id, group.tenant, group.group]
        desired.add_metric(names, group.desired)
        actual.add_metric(names, group.by_state.get("Running", 0))
        busy.add_metric(names, sum(vm_id in busy_vms for vm_id in group.vm_ids))
        for state, count in sorted(group.by_state.items()):
            by_state.add_metric([*names, state], count)
    found: list[Metric] = [desired, actual, busy, by_state]
    return found


WEBHOOK_RESULTS = ("delivered", "retry", "failed", "gone", "refused")
"""What an attempt of a webhook delivery came to (`adapters.outbox.Sender`)."""


class WebhookCounters:
    """The webhook sender's `WebhookMeter`: attempts by result, and the outbox backlog
    (Pending deliveries) read at each scrape."""

    def __init__(self, registry: CollectorRegistry, backlog: Callable[[], int]) -> None:
        self.deliveries = Counter(
            "batchyard_webhook_deliveries", "Webhook delivery attempts, by result: "
            "delivered (2xx), retry (to be tried again), failed (retries exhausted), gone "
            "(410: endpoint disabled), refused (address not allowed)", ["result"],
            registry=registry)
        for result in WEBHOOK_RESULTS:
            self.deliveries.labels(result)
        registry.register(_BacklogCollector(backlog))

    def attempted(self, result: str) -> None:
        self.deliveries.labels(result).inc()


class _BacklogCollector(Collector):
    def __init__(self, backlog: Callable[[], int]) -> None:
        self._backlog = backlog

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("batchyard_webhook_backlog", "Webhook deliveries "
                                   "pending (not yet delivered nor failed), now")
        family.add_metric([], self._backlog())
        yield family


class Metrics:
    """One application's metrics: its own registry (so two servers in one process, as in
    the tests, count apart), the meter the engine feeds and the tallies' collector."""

    def __init__(self, tallies: Tallies, busy: Callable[[Sequence[str]], Iterable[str]],
                 clock: Callable[[], float] = time.time, token: str = "") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.meter = Meter(self.registry, clock)
        self.registry.register(TallyCollector(tallies, busy))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(GC_COLLECTOR)
        self.token = token

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric, read now."""
        return generate_latest(self.registry)

    def check(self, authorization: str | None) -> None:
        """Refuse the scrape unless it carries the token (when one is set): 401 without
        an `Authorization: Bearer` header, 403 with a wrong token."""
        if not self.token:
            return
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise HTTPException(401, "GET /metrics needs the metrics token: send "
                                "`Authorization: Bearer <metrics_token>` (the server's "
                                "metrics_token setting, BATCHYARD_METRICS_TOKEN)",
                                headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise HTTPException(403, "the metrics token sent is not the server's "
                                "metrics_token: check the scrape's bearer token")


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus metrics (text format 0.0.4), behind a bearer token if one is set."""
    found: Metrics = request.app.state.metrics
    found.check(request.headers.get("authorization"))
    return Response(found.exposition(), media_type=CONTENT_TYPE_LATEST)


def attach(engine: Engine, settings: Settings) -> Metrics:
    """The metrics of a server running `engine`: its meter listens to the engine from now on."""
    store = engine.store
    if not isinstance(store, SqlStore):
        raise TypeError("/metrics needs the SQL store (it reads the counts kept there)")
    found = Metrics(SqlTallies(store.engine), lambda vm_ids: engine.running_on(vm_ids),
                    engine.clock, settings.metrics_token.get_secret_value())
    engine.listen(found.meter)
    engine.measure(found.meter)
    return found
