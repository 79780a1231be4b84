"""The agent: BatchCompute's VM — slots, a capacity and labels — running leased attempts
(see `ports.agents` for the protocol, `agent.agent` for the one in this process)."""
