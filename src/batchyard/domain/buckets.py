"""Who may use which bucket (pure rules; the store keeps who owns what).

Every bucket belongs to one tenant. A bucket named in configuration (`bucket_grants`) has
the owner configuration gives it, and may be shared there: read-only with some tenants,
read-write with others. Any other bucket belongs to the first tenant whose job names it
(the store claims it in the transaction that stores the job) and is shared with nobody.
A tenant may read a bucket it owns or is granted; it may write one it owns or is granted
read-write. `*` in a list of tenants means every tenant (a bucket of shared reference data,
say). `batchyard run` submits as the tenant `default`, which so owns the buckets of a
one-user installation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from batchyard.domain.spec import ObjectUse, bucket_of
from batchyard.errors import Problem, SpecError

EVERYONE = "*"
"""In a grant's list of tenants: every tenant."""
FORBIDDEN = "Forbidden"
"""The BatchCompute code of a refusal (reference §9.8: 403, not authorised for resource)."""


@dataclass(frozen=True)
class Grant:
    """Who owns a bucket, and whom it is shared with."""

    owner: str
    readers: frozenset[str] = frozenset()
    writers: frozenset[str] = frozenset()

    def allows(self, tenant: str, writes: bool) -> bool:
        if tenant == self.owner or _names(self.writers, tenant):
            return True
        return not writes and _names(self.readers, tenant)

    def reachable_by(self, tenant: str) -> bool:
        return self.allows(tenant, writes=False)


def _names(tenants: frozenset[str], tenant: str) -> bool:
    return tenant in tenants or EVERYONE in tenants


class BucketForbidden(SpecError):
    """A job names buckets its tenant may not use (403, code Forbidden)."""

    status = 403


def problems(tenant: str, uses: Iterable[ObjectUse],
             grants: Mapping[str, Grant]) -> list[Problem]:
    """One problem per use of a bucket in `grants` that `tenant` may not make."""
    found = []
    for use in uses:
        bucket = bucket_of(use.url)
        grant = grants.get(bucket)
        if grant is not None and not grant.allows(tenant, use.writes):
            found.append(refusal(use, bucket, grant, tenant))
    return found


def refusal(use: ObjectUse, bucket: str, grant: Grant, tenant: str) -> Problem:
    """The problem of a use `tenant` may not make, saying what it may do instead."""
    if grant.reachable_by(tenant):
        why = f"tenant {tenant!r} may only read bucket {bucket!r}"
    else:
        why = f"bucket {bucket!r} belongs to another tenant"
    return Problem(FORBIDDEN, use.path, use.url,
                   f"{why}; use a bucket of your own (or ask its owner to grant access)")


def refuse(found: list[Problem]) -> None:
    """Raise BucketForbidden for `found`, if any."""
    if found:
        raise BucketForbidden(found)
