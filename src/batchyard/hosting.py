"""What runs attempts on this machine, built from Settings: the object store, the runner's
settings and the agent.

`batchyard run` hosts its agent in its own process; `batchyard serve` in a child process
(`agent.process.AgentProcess`), so that running instances do not compete with the API for
the GIL. The child builds its agent with `hosted_agent`, from the same Settings, and
imports only this module's light dependencies (no engine, no SQL).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from batchyard.adapters.objectstore import FsspecObjectStore
from batchyard.adapters.s3 import s3_configuration
from batchyard.domain.attempt import AttemptKey
from batchyard.ports.agents import (
    Agent,
    AgentInfo,
    AgentListener,
    AgentsFactory,
    LeaseBatch,
    Report,
)
from batchyard.ports.objects import ObjectStore
from batchyard.runner.confinement import Confinement, Limits
from batchyard.runner.package import PackageLimits
from batchyard.runner.runner import RunnerSettings
from batchyard.runner.sandbox import MISSING_MESSAGE, bwrap_path
from batchyard.settings import Settings

log = logging.getLogger(__name__)

HEARTBEAT = 2.0
"""Seconds between the heartbeats of an agent process (three missed: it is lost)."""
RESTART_DELAYS = (0.0, 1.0, 5.0, 30.0)
"""Waits before restarting an agent process that died, the last repeated."""
STABLE_AFTER = 60.0
"""An agent process that lived this long before it died is restarted at once again."""


def open_objects(settings: Settings, shared_with: int | None = None,
                 root: Path | None = None) -> FsspecObjectStore:
    """The object store; `shared_with`: the group of confined programs, which then may
    write in every folder the store makes in a bucket (mode 2775, that group); `root`: the
    folder of unmapped buckets, when not this machine's data dir (a Ray node's agent uses
    the server's, declared shared by every node)."""
    s3 = s3_configuration(
        settings.s3_endpoint_url, settings.s3_region,
        settings.s3_access_key_id.get_secret_value(),
        settings.s3_secret_access_key.get_secret_value(), settings.s3_addressing_style)
    shared = shared_with is not None
    return FsspecObjectStore(root or settings.object_root, settings.buckets, s3.options, s3.secrets,
                             s3.program_environment, direct_s3=bool(s3.options),
                             folder_mode=0o2775 if shared else None, folder_group=shared_with)


def hidden_paths(settings: Settings, objects: ObjectStore) -> tuple[str, ...]:
    """What sandboxed programs must not see: the data dir, database, local bucket folders."""
    hidden = [str(settings.data_dir.resolve()), *objects.local_folders()]
    url = settings.resolved_database_url
    if url.startswith("sqlite:///"):
        database = os.path.abspath(url[len("sqlite:///"):])
        hidden += [database, f"{database}-wal", f"{database}-shm"]
    return tuple(hidden)


def confinement(settings: Settings, serving: bool) -> Confinement:
    """The confinement policy: always the sandbox under `serve` (unless insecure)."""
    sandbox = settings.sandbox
    enabled = (serving and not settings.insecure_no_sandbox) or sandbox.enabled
    limits = Limits(memory_bytes=settings.memory_per_attempt,
                    memory_cap=settings.sandbox.memory_bytes,
                    max_processes=sandbox.max_processes, disk_bytes=sandbox.disk_bytes)
    return Confinement(sandbox=enabled, user_base=sandbox.user_base,
                       network=sandbox.network == "host", limits=limits,
                       tracking=settings.process_tracking)


def machine_objects(settings: Settings, serving: bool, root: Path | None = None
                    ) -> FsspecObjectStore:
    """The object store as attempts on this machine use it (shared with the group of
    confined programs when they run as users of their own)."""
    policy = confinement(settings, serving)
    privileged = os.geteuid() == 0
    return open_objects(settings, policy.user_base if policy.sandbox and privileged else None,
                        root)


def runner_settings(settings: Settings, objects: ObjectStore, serving: bool) -> RunnerSettings:
    policy = confinement(settings, serving)
    limits = PackageLimits(max_bytes=settings.package_max_bytes,
                           max_members=settings.package_max_members,
                           max_path=settings.package_max_path)
    return RunnerSettings(
        work_root=settings.work_root, region=settings.region, oss_host=settings.oss_host,
        keep_workdirs=settings.keep_workdirs, cache_root=settings.cache_root,
        hidden=hidden_paths(settings, objects), log_interval=settings.log_interval,
        confinement=policy, package_limits=limits,
        inherit_environment=not serving and not policy.sandbox)


QUEUED_PER_SLOT = 16
"""Leases the machine's agent takes beyond its slots, per slot (used for short attempts
only: see `orchestrator.fleet`)."""


def agent_info(settings: Settings, serving: bool) -> AgentInfo:
    """This machine as one agent: `slots` attempts at once."""
    return AgentInfo(f"local-{socket.gethostname()}", settings.slots,
                     sandbox=bwrap_path() is not None, sandbox_missing=MISSING_MESSAGE,
                     heartbeat=HEARTBEAT if serving else 0.0,
                     queue=QUEUED_PER_SLOT * settings.slots)


def hosted_agent(info: AgentInfo, settings: Settings, serving: bool,
                 listener: AgentListener, object_root: Path | None = None) -> Agent:
    """A started agent running attempts on this machine (in whatever process calls it: the
    engine's for `run`, the agent process's for `serve`, a Ray node's actor)."""
    from batchyard.agent.agent import LocalAgent

    objects = machine_objects(settings, serving, object_root)
    return LocalAgent(info, objects, runner_settings(settings, objects, serving),
                      listener).start()


def agents_for(settings: Settings, serving: bool) -> AgentsFactory:
    """The Engine's agent factory: one agent on this machine, in a process of its own
    (started again when it dies) under `serve`, in the engine's process for `run`."""
    info = agent_info(settings, serving)
    if not serving:
        return lambda listener: [hosted_agent(info, settings, serving, listener)]
    return lambda listener: [SupervisedProcess(info, settings, listener).start()]


class SupervisedProcess:
    """An agent in a process of its own, started again when it dies (after RESTART_DELAYS,
    the delay growing while it keeps dying young), until the engine shuts it down.

    The engine's handle (an Agent) and the process's listener (an AgentListener) at once:
    everything the process reports goes on to the engine.
    """

    def __init__(self, info: AgentInfo, settings: Settings, listener: AgentListener) -> None:
        from batchyard.agent.process import AgentProcess
        from batchyard.agent.wire import AgentFactory

        self.listener = listener
        self.process = AgentProcess(info, self, AgentFactory(
            f"{__name__}:hosted_agent", (settings, True)), work_root=settings.work_root)
        self._closed = threading.Event()
        self._deaths = 0
        self._started = 0.0

    def start(self) -> SupervisedProcess:
        self._started = time.monotonic()
        self.process.start()
        return self

    # ---- Agent ---------------------------------------------------------------------------

    def info(self) -> AgentInfo:
        return self.process.info()

    def lease(self, batch: LeaseBatch) -> None:
        self.process.lease(batch)

    def cancel(self, keys: Sequence[AttemptKey]) -> None:
        self.process.cancel(keys)

    def forget(self, job_id: str) -> None:
        self.process.forget(job_id)

    def shutdown(self) -> None:
        self._closed.set()
        self.process.shutdown()

    # ---- AgentListener -------------------------------------------------------------------

    def reported(self, agent_id: str, reports: Sequence[Report]) -> None:
        self.listener.reported(agent_id, reports)

    def heartbeat(self, agent_id: str, running: Sequence[int]) -> None:
        self.listener.heartbeat(agent_id, running)

    def gone(self, agent_id: str, reason: str) -> None:
        self.listener.gone(agent_id, reason)
        if self._closed.is_set():
            return
        if time.monotonic() - self._started > STABLE_AFTER:
            self._deaths = 0
        threading.Thread(target=self._restart, args=(agent_id, reason), daemon=True,
                         name=f"restart-{agent_id}").start()

    def _restart(self, agent_id: str, reason: str) -> None:
        while not self._closed.is_set():
            delay = RESTART_DELAYS[min(self._deaths, len(RESTART_DELAYS) - 1)]
            self._deaths += 1
            log.error("agent %s %s; a new agent process starts in %.0f s", agent_id, reason,
                      delay)
            if self._closed.wait(delay):
                return
            try:
                self.start()
            except Exception as error:  # it said why on stderr; try again, later
                reason = f"failed to start again ({error})"
                continue
            if self._closed.is_set():  # shut down while it started
                self.process.shutdown()
            return
