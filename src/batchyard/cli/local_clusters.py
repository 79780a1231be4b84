"""`batchyard clusters` on a data directory, without a server: the Clusters service on the
data dir's database, answering with the API's JSON (so both backends print alike).

Clusters made here belong to tenant `default`, the tenant of `batchyard run`, whose jobs may
then name them in ClusterId. A data dir served by `batchyard serve` is refused: its clusters
change through the server (--endpoint), whose engine is woken by every change.
"""

from __future__ import annotations

from typing import Any

from batchyard.adapters.store import SqlStore
from batchyard.api.cluster_documents import cluster_view, vm_view
from batchyard.domain.clusters import check_instance_types, parse_cluster, parse_cluster_change
from batchyard.domain.instance_types import infeasible
from batchyard.lock import DataDirBusy, holder
from batchyard.orchestrator.clusters import Clusters
from batchyard.settings import Settings, machine

LOCAL_TENANT = "default"
"""The tenant of the clusters made on a data dir (that of `batchyard run`'s jobs)."""
PAGE = 100


class LocalClusters:
    """The `ClusterClient` calls on one data directory."""

    def __init__(self, settings: Settings) -> None:
        self.data_dir = settings.data_dir.resolve()
        self.store = SqlStore(settings.resolved_database_url)
        catalogue, capacity, here = settings.catalogue(), settings.capacity, machine()
        self.clusters = Clusters(self.store, check_types=lambda description: (
            check_instance_types(description, catalogue,
                                 lambda shape: infeasible(shape, here, capacity))),
            vm_quota=settings.vm_quota, cluster_quota=settings.cluster_quota)

    @property
    def where(self) -> str:
        return f"data dir {self.data_dir}"

    def close(self) -> None:
        self.store.close()

    def create(self, body: dict[str, Any]) -> str:
        self._writable()
        return self.clusters.create(parse_cluster(body), LOCAL_TENANT)

    def list_clusters(self) -> list[dict[str, Any]]:
        found, marker = [], ""
        while True:
            page = self.clusters.list(None, marker, PAGE)
            found += [cluster_view(status) for status in page.items]
            marker = page.next_marker
            if not marker:
                return found

    def get(self, cluster_id: str) -> dict[str, Any]:
        return cluster_view(self.clusters.get(cluster_id, None))

    def change(self, cluster_id: str, body: dict[str, Any]) -> None:
        self._writable()
        self.clusters.change(cluster_id, parse_cluster_change(body), None)

    def delete(self, cluster_id: str) -> None:
        self._writable()
        self.clusters.delete(cluster_id, None)

    def vms(self, cluster_id: str, group: str) -> list[dict[str, Any]]:
        found, marker = [], ""
        while True:
            page = self.clusters.vms(cluster_id, group, None, marker, PAGE)
            found += [vm_view(vm) for vm in page.items]
            marker = page.next_marker
            if not marker:
                return found

    def _writable(self) -> None:
        held = holder(self.data_dir)
        if held is not None and held.role == "serve":
            endpoint = held.detail or "http://HOST:PORT (the address it printed)"
            raise DataDirBusy(f"{self.where} is served by `batchyard serve` (pid {held.pid}): "
                              f"use --endpoint {endpoint} (or set BATCHYARD_ENDPOINT)")
