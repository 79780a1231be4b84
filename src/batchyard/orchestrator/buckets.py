"""The buckets of each tenant, as the engine sees them (rules in `domain.buckets`).

Configured buckets (`bucket_grants`) are checked here, before the job is stored; the others
are claimed or checked by the store in the job's own transaction. The buckets a tenant can
reach — the ones its confined programs get bound into their sandbox — are kept per tenant
and read again after each of its submissions (the only way it gains a bucket).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from batchyard.domain import buckets as rules
from batchyard.domain.attempt import BucketAccess
from batchyard.domain.spec import JobDescription, ObjectUse, bucket_of, object_urls
from batchyard.ports.store import StateStore


class TenantBuckets:
    """Which tenant may use which bucket: configuration, plus the store's claims."""

    def __init__(self, store: StateStore, grants: Mapping[str, rules.Grant]) -> None:
        self.store = store
        self.grants = dict(grants)
        self._reachable: dict[str, tuple[BucketAccess, ...]] = {}
        self._lock = threading.Lock()

    def claims(self, tenant: str, spec: JobDescription) -> tuple[ObjectUse, ...]:
        """The uses of buckets the store must claim or check for `tenant`'s job; raises
        BucketForbidden for a configured bucket the tenant may not use so."""
        uses = object_urls(spec)
        rules.refuse(rules.problems(tenant, uses, self.grants))
        return tuple(use for use in uses if bucket_of(use.url) not in self.grants)

    def submitted(self, tenant: str) -> None:
        """`tenant` may own more buckets now."""
        with self._lock:
            self._reachable.pop(tenant, None)

    def reachable(self, tenant: str) -> tuple[BucketAccess, ...]:
        """The buckets `tenant` owns or is granted, with whether it may write them."""
        with self._lock:
            known = self._reachable.get(tenant)
        if known is not None:
            return known
        configured = [BucketAccess(name, grant.allows(tenant, writes=True))
                      for name, grant in sorted(self.grants.items())
                      if grant.reachable_by(tenant)]
        owned = [BucketAccess(name, True) for name in self.store.owned_buckets(tenant)]
        found = tuple(configured + owned)
        with self._lock:
            self._reachable[tenant] = found
        return found
