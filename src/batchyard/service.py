"""Composition root: builds the store, object store, agents and engine from Settings.

Two ways to open an engine: for `batchyard run` (one user's own jobs; plain jobs run as
that user, directly) and for `batchyard serve` (`serving=True`: every attempt of every
tenant is confined — the sandbox, an unprivileged user, limits — and the server refuses to
start if it cannot confine them, unless the operator passed `--insecure-no-sandbox`).
"""

from __future__ import annotations

import gc
import logging
import os
import stat

from batchyard.adapters.store import SqlStore
from batchyard.domain.buckets import Grant
from batchyard.errors import BatchyardError
from batchyard.hosting import agents_for, confinement, machine_objects
from batchyard.lock import DataDirLock
from batchyard.orchestrator.engine import Engine
from batchyard.ports.provider import Provider
from batchyard.runner.sandbox import check_sandbox
from batchyard.settings import Settings, machine

log = logging.getLogger(__name__)


def bucket_grants(settings: Settings) -> dict[str, Grant]:
    """The buckets configuration gives to tenants (the rest go to their first user)."""
    return {name: Grant(grant.owner, frozenset(grant.read), frozenset(grant.write))
            for name, grant in settings.bucket_grants.items()}


def private_data_dir(settings: Settings) -> None:
    """The data directory holds the database and the master key: its owner's alone."""
    folder = settings.data_dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    status = folder.stat()
    if stat.S_IMODE(status.st_mode) & 0o077 and status.st_uid == os.geteuid():
        folder.chmod(0o700)


def open_engine(settings: Settings, serving: bool = False) -> Engine:
    """A started engine for these settings; close it (or use `with`) when done.

    For `run` (not `serving`), jobs left active by an engine that ended are Stopped, not
    resumed (see `Engine.start`); they are listed in the engine's `abandoned`.
    """
    policy = confinement(settings, serving)
    root = os.geteuid() == 0
    if policy.sandbox:
        check_sandbox(root=root, user_base=policy.user_base)
    elif serving:
        log.warning("--insecure-no-sandbox: attempts run unconfined as %s; any tenant can "
                    "take over this installation", "root" if root else "this user")
    private_data_dir(settings)
    objects = machine_objects(settings, serving)

    lock = DataDirLock(settings.data_dir.resolve(), "serve" if serving else "run")
    releases = [lock.release]
    try:
        store = SqlStore(settings.resolved_database_url)
        releases.insert(0, store.claim())
        provider = _provider(settings, serving)
        if provider is not None:
            releases.insert(0, provider.shutdown)  # not reached once the engine owns it
        engine = Engine(store, objects,
                        agents_for(settings, serving) if provider is None else provider.agents,
                        provider=provider, autocluster_vms=settings.ray_autocluster_vms,
                        closers=tuple(releases), grants=bucket_grants(settings),
                        weights=settings.tenant_weights,
                        catalogue=settings.catalogue(), machine=machine(),
                        capacity=settings.capacity, vm_quota=settings.vm_quota,
                        cluster_quota=settings.cluster_quota,
                        reserve_seconds=settings.reserve_on_fail_seconds)
        if provider is not None:
            releases.remove(provider.shutdown)
        started = engine.start(abandon=not serving)
    except BaseException:
        for release in releases:
            release()
        raise
    _settle_the_heap()
    return started


def _provider(settings: Settings, serving: bool) -> Provider | None:
    """The provider of VMs other than this machine's agents (None: the local one)."""
    if settings.provider == "local":
        return None
    if not serving:
        raise BatchyardError("the Ray provider serves jobs from `batchyard serve`; "
                             "`batchyard run` runs them on this machine (--provider local)")
    from batchyard.onray.provider import RayProvider, check_object_store

    check_object_store(settings, settings.shared_object_root)
    return RayProvider(settings, settings.ray_address, settings.ray_namespace,
                       settings.ray_autoscaler, settings.ray_node_root)


def _settle_the_heap() -> None:
    """Exempt everything made so far (modules, classes, schemas) from garbage collection.

    The engine then allocates many short-lived objects per attempt, and each full
    collection would walk the whole start-up heap again: `gc.freeze()` saves a fifth of the
    CPU time of a thousand short attempts.
    """
    gc.freeze()
