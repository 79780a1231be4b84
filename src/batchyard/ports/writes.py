"""What every store port's writes share: KEEP (a field left as it is) and the idempotency
token a create records. Apart from `ports.store`, so that `ports.clusters` (whose
transactions a `StateTransaction` extends) needs nothing of it."""

from __future__ import annotations

from enum import Enum
from typing import Any, Final, Literal, NamedTuple


class _Keep(Enum):
    KEEP = "keep"


KEEP: Final = _Keep.KEEP
"""A field a write leaves as it is (None is a value: it clears the field)."""
Keep = Literal[_Keep.KEEP]
Stamp = float | Keep | None
"""A time a write sets, clears (None) or leaves as it is (KEEP)."""


def given(**fields: Any) -> dict[str, Any]:
    """The fields a write sets: those not KEEP (for the stores implementing writes)."""
    return {name: value for name, value in fields.items() if value is not KEEP}


class IdempotencyToken(NamedTuple):
    """An `IdempotentToken` of a request and the digest of the body it came with."""

    kind: str
    token: str
    digest: str
