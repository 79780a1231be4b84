"""Agents: what BatchCompute calls a VM, running attempts with the runner (see ports.agents)."""
