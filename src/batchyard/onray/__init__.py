"""The Ray provider: batchyard's VMs on the nodes of a Ray cluster.

- `node`: the agent of one Ray node, hosted in a detached actor (`NodeAgent`): the same
  `LocalAgent` that runs attempts beside `batchyard serve`, fed in batches.
- `provider`: the engine's side (`RayProvider`, a `ports.provider.Provider`): finds or starts
  one node agent per node that offers an InstanceType, reserves each VM as a placement group
  of one bundle of its type's CPU and memory, and hands leases to the node agents.

Imported only when the server runs with `provider = "ray"`: Ray is an optional dependency
(`pip install 'batchyard[ray]'`).
"""
