"""The agent the engine's own process runs today (`adapters.local_executor.LocalExecutor`,
the real runner), built inside an agent process: the factory the end-to-end test of
`test_agent_process` hands to `AgentProcess` (until `service` has one of its own)."""

from __future__ import annotations

from batchyard.adapters.local_executor import LocalExecutor
from batchyard.ports.agents import AgentInfo, AgentListener
from batchyard.service import _runner_settings, confinement, open_objects
from batchyard.settings import Settings


def local_executor(info: AgentInfo, settings: Settings, listener: AgentListener) -> LocalExecutor:
    policy = confinement(settings, serving=False)
    objects = open_objects(settings)
    return LocalExecutor(info.slots, objects,
                         _runner_settings(settings, policy, objects, serving=False), listener)
