"""The webhook store (`ports.webhooks.WebhookStore`) in the state database, SQLAlchemy Core.

Signing secrets are encrypted with the installation's master key (Fernet), as the access
keys' secrets are (`adapters.credentials`); each is decrypted once per process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, func, select, update

from batchyard.adapters.database import insert_ignoring_duplicates, migrate
from batchyard.adapters.schema import (
    webhook_cursor,
    webhook_deliveries,
    webhook_endpoints,
    webhook_secrets,
)
from batchyard.domain.webhooks import (
    DeliveryState,
    EndpointState,
    check_delivery_move,
    secret_text,
    signing,
)
from batchyard.errors import BatchyardError, NotFound
from batchyard.ports.reads import InvalidMarker
from batchyard.ports.webhooks import (
    Attempted,
    Delivery,
    DeliveryPage,
    Endpoint,
    NewDelivery,
    SecretInfo,
)

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

CURSOR = "outbox"
PENDING = DeliveryState.PENDING.value
FAILED = DeliveryState.FAILED.value
DISABLED = EndpointState.DISABLED.value


class SqlWebhooks:
    """`WebhookStore` on a SQLAlchemy engine of batchyard's schema."""

    def __init__(self, database: Engine, cipher: Fernet) -> None:
        self.database = database
        self.cipher = cipher
        self._plain: dict[str, str] = {}
        """Stored ciphertext -> its secret: each is decrypted once."""
        migrate(database)

    # ---- the outbox ------------------------------------------------------------------------

    def cursor(self) -> str:
        with self.database.connect() as connection:
            found = connection.execute(select(webhook_cursor.c.event_id).where(
                webhook_cursor.c.name == CURSOR)).scalar()
        return "" if found is None else str(found)

    def enqueue(self, deliveries: Sequence[NewDelivery], cursor: str, now: float) -> int:
        with self.database.begin() as connection:
            endpoints = self._endpoints_of(connection, deliveries, now)
            rows = [_delivery_row(new, endpoints[new.tenant, new.url], now)
                    for new in deliveries]
            if rows:
                connection.execute(insert_ignoring_duplicates(connection, webhook_deliveries),
                                   rows)
            _move_cursor(connection, int(cursor) if cursor else 0)
        return len(rows)

    def _endpoints_of(self, connection: Connection, deliveries: Sequence[NewDelivery],
                      now: float) -> dict[tuple[str, str], tuple[int, str | None]]:
        wanted = {(new.tenant, new.url) for new in deliveries}
        if not wanted:
            return {}
        connection.execute(insert_ignoring_duplicates(connection, webhook_endpoints), [
            {"tenant": tenant, "url": url, "state": EndpointState.ACTIVE.value, "reason": "",
             "created": now, "updated": now} for tenant, url in sorted(wanted)])
        tenants = {tenant for tenant, _ in wanted}
        rows = connection.execute(select(webhook_endpoints).where(
            webhook_endpoints.c.tenant.in_(tenants))).all()
        return {(row.tenant, row.url): (row.id, row.reason if row.state == DISABLED else None)
                for row in rows if (row.tenant, row.url) in wanted}

    def due(self, now: float, busy: Sequence[int], limit: int) -> list[Delivery]:
        heads = (select(webhook_deliveries.c.endpoint_id,
                        func.min(webhook_deliveries.c.event_id).label("event_id"))
                 .where(webhook_deliveries.c.state == PENDING)
                 .group_by(webhook_deliveries.c.endpoint_id).subquery())
        query = (_DELIVERIES.join(heads, (heads.c.endpoint_id == webhook_deliveries.c.endpoint_id)
                                  & (heads.c.event_id == webhook_deliveries.c.event_id)))
        statement = (select(*_COLUMNS).select_from(query)
                     .where(webhook_deliveries.c.next_attempt <= now)
                     .order_by(webhook_deliveries.c.next_attempt, webhook_deliveries.c.id))
        if busy:
            statement = statement.where(webhook_deliveries.c.endpoint_id.not_in(list(busy)))
        with self.database.connect() as connection:
            return [_delivery(row) for row in connection.execute(statement.limit(limit))]

    def record(self, attempted: Attempted, now: float) -> None:
        with self.database.begin() as connection:
            current = connection.execute(select(webhook_deliveries.c.state).where(
                webhook_deliveries.c.id == attempted.delivery_id)).scalar()
            if current is None:
                return
            check_delivery_move(attempted.delivery_id, DeliveryState(current), attempted.state)
            connection.execute(update(webhook_deliveries).where(
                webhook_deliveries.c.id == attempted.delivery_id).values(
                state=attempted.state.value, attempts=webhook_deliveries.c.attempts + 1,
                next_attempt=attempted.next_attempt, last_status=attempted.status,
                last_error=attempted.error[:2000], updated=now))

    def disable(self, endpoint_id: int, reason: str, now: float) -> int:
        with self.database.begin() as connection:
            connection.execute(update(webhook_endpoints).where(
                webhook_endpoints.c.id == endpoint_id).values(
                state=EndpointState.DISABLED.value, reason=reason, updated=now))
            return int(connection.execute(update(webhook_deliveries).where(
                webhook_deliveries.c.endpoint_id == endpoint_id,
                webhook_deliveries.c.state == PENDING).values(
                state=FAILED, last_error=reason, updated=now)).rowcount)

    def pending_count(self) -> int:
        with self.database.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(
                webhook_deliveries).where(webhook_deliveries.c.state == PENDING)).scalar() or 0)

    # ---- what tenants see ------------------------------------------------------------------

    def deliveries(self, tenant: str, state: DeliveryState | None, marker: str,
                   limit: int) -> DeliveryPage:
        after = _marker(marker)
        query = (select(*_COLUMNS).select_from(_DELIVERIES)
                 .where(webhook_deliveries.c.tenant == tenant, webhook_deliveries.c.id > after))
        if state is not None:
            query = query.where(webhook_deliveries.c.state == state.value)
        with self.database.connect() as connection:
            rows = connection.execute(query.order_by(webhook_deliveries.c.id)
                                      .limit(limit + 1)).all()
        items = [_delivery(row) for row in rows[:limit]]
        return DeliveryPage(items, str(items[-1].id) if len(rows) > limit else "")

    def delivery(self, delivery_id: int, tenant: str) -> Delivery | None:
        with self.database.connect() as connection:
            row = connection.execute(select(*_COLUMNS).select_from(_DELIVERIES).where(
                webhook_deliveries.c.id == delivery_id,
                webhook_deliveries.c.tenant == tenant)).first()
        return None if row is None else _delivery(row)

    def replay(self, tenant: str, first: int, last: int, now: float) -> list[int]:
        with self.database.begin() as connection:
            rows = connection.execute(
                select(webhook_deliveries.c.id, webhook_deliveries.c.endpoint_id)
                .where(webhook_deliveries.c.tenant == tenant,
                       webhook_deliveries.c.id.between(first, last),
                       webhook_deliveries.c.state == FAILED)
                .order_by(webhook_deliveries.c.id)).all()
            if not rows:
                return []
            ids = [row.id for row in rows]
            connection.execute(update(webhook_endpoints).where(
                webhook_endpoints.c.id.in_({row.endpoint_id for row in rows})).values(
                state=EndpointState.ACTIVE.value, reason="", updated=now))
            connection.execute(update(webhook_deliveries).where(
                webhook_deliveries.c.id.in_(ids)).values(
                state=PENDING, next_attempt=now, attempts=0, updated=now))
        return ids

    def endpoints(self, tenant: str) -> list[Endpoint]:
        with self.database.connect() as connection:
            rows = connection.execute(select(webhook_endpoints).where(
                webhook_endpoints.c.tenant == tenant).order_by(webhook_endpoints.c.id)).all()
        return [Endpoint(row.id, row.tenant, row.url, EndpointState(row.state), row.reason)
                for row in rows]

    # ---- signing secrets -------------------------------------------------------------------

    def rotate_secret(self, tenant: str, raw: bytes, now: float) -> str:
        text = secret_text(raw)
        sealed = self.cipher.encrypt(text.encode()).decode("ascii")
        with self.database.begin() as connection:
            connection.execute(update(webhook_secrets).where(
                webhook_secrets.c.tenant == tenant, webhook_secrets.c.retired.is_(None))
                .values(retired=now))
            connection.execute(webhook_secrets.insert(), [
                {"tenant": tenant, "secret": sealed, "created": now, "retired": None}])
            connection.execute(webhook_secrets.delete().where(
                webhook_secrets.c.tenant == tenant, webhook_secrets.c.retired < now - 86400))
        return text

    def secret_info(self, tenant: str) -> SecretInfo:
        with self.database.connect() as connection:
            created = connection.execute(select(webhook_secrets.c.created).where(
                webhook_secrets.c.tenant == tenant,
                webhook_secrets.c.retired.is_(None))).scalar()
        return SecretInfo(created is not None, created)

    def signing_secrets(self, tenant: str, now: float) -> list[str]:
        with self.database.connect() as connection:
            rows = connection.execute(select(webhook_secrets.c.secret, webhook_secrets.c.retired)
                                      .where(webhook_secrets.c.tenant == tenant)).all()
        return signing([(self._decrypted(row.secret), row.retired) for row in rows], now)

    def _decrypted(self, sealed: str) -> str:
        known = self._plain.get(sealed)
        if known is None:
            from cryptography.fernet import InvalidToken

            try:
                known = self.cipher.decrypt(sealed.encode("ascii")).decode()
            except InvalidToken as error:
                raise BatchyardError("a webhook signing secret was encrypted with another "
                                     "master key: rotate it (batchyard webhooks secret "
                                     "--rotate)") from error
            self._plain[sealed] = known
        return known


def missing_delivery(delivery_id: int | str) -> NotFound:
    return NotFound(f"delivery {delivery_id} does not exist")


_DELIVERIES = webhook_deliveries.join(
    webhook_endpoints, webhook_endpoints.c.id == webhook_deliveries.c.endpoint_id)
_COLUMNS = (*webhook_deliveries.c, webhook_endpoints.c.url)


def _move_cursor(connection: Connection, event_id: int) -> None:
    moved = connection.execute(update(webhook_cursor).where(
        webhook_cursor.c.name == CURSOR).values(event_id=event_id)).rowcount
    if not moved:
        connection.execute(webhook_cursor.insert(), [{"name": CURSOR, "event_id": event_id}])


def _marker(marker: str) -> int:
    if not marker:
        return 0
    if not marker.isdigit() or len(marker) > 18:
        raise InvalidMarker(f"the marker {marker[:40]!r} is not one a listing gave: pass "
                            "back a NextMarker, or none to start at the first delivery")
    return int(marker)


def _delivery_row(new: NewDelivery, endpoint: tuple[int, str | None],
                  now: float) -> dict[str, Any]:
    """A new delivery's row: Pending, or Failed at once for a disabled endpoint (`endpoint`:
    its id and why it is disabled, None while active), kept for a replay."""
    endpoint_id, disabled = endpoint
    return {"event_id": new.event_id, "endpoint_id": endpoint_id, "tenant": new.tenant,
            "job_id": new.job_id, "seq": new.seq, "event_type": new.event_type,
            "event_time": new.event_time, "data": json.dumps(new.data, ensure_ascii=False),
            "state": PENDING if disabled is None else FAILED, "attempts": 0,
            "next_attempt": now, "last_status": None,
            "last_error": "" if disabled is None else f"not sent: {disabled}",
            "created": now, "updated": now}


def _delivery(row: Any) -> Delivery:
    return Delivery(
        id=row.id, event_id=row.event_id, endpoint_id=row.endpoint_id, tenant=row.tenant,
        url=row.url, job_id=row.job_id, seq=row.seq, event_type=row.event_type,
        event_time=row.event_time, data=json.loads(row.data), state=DeliveryState(row.state),
        attempts=row.attempts, next_attempt=row.next_attempt, last_status=row.last_status,
        last_error=row.last_error, created=row.created, updated=row.updated)
