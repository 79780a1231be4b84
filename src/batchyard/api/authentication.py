"""Who sent a request: the BatchCompute signature check (reference §9.3).

Failures and their codes (documented in docs/rest-api.md):

| Status | Code | When |
|---|---|---|
| 403 | MissingAuthorization | no `Authorization: acs <id>:<signature>` header |
| 403 | InvalidAccessKeyId.NotFound | the key id is unknown |
| 403 | InvalidAccessKeyId.Inactive | the key was revoked |
| 403 | InvalidVersion.NotFound | `x-acs-version` is not 2015-11-11 |
| 400 | MissingDate / InvalidDate | no usable `Date` (or `x-acs-date`) header |
| 403 | RequestTimeTooSkewed | the date is more than 15 minutes from the server's clock |
| 400 | InvalidSignature | the signature does not match, or the key ids of the headers differ |
| 400 | MissingSignatureNonce | no `x-acs-signature-nonce` (unless `allow_missing_nonce`) |
| 403 | SignatureNonceUsed | the `x-acs-signature-nonce` was already used within the window |
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import lru_cache

from batchyard.adapters.credentials import AccessKey, KeyStore, Nonce, NonceLedger, nonce_digest
from batchyard.api.errors import AccessDenied, BadRequest
from batchyard.api.signature import (
    API_VERSION,
    matches,
    parse_authorization,
    signature,
    string_to_sign,
)

ALLOWED_SKEW = 15 * 60.0
RETRY_DELAY = 0.2
"""Seconds the nonce writer waits after a failed batch before it tries again."""
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """The tenant a request acts for, and the key that signed it."""

    tenant: str
    key_id: str


SAVED: Future[None] = Future()
"""The answer of `NonceRegistry.use` when there is nothing to wait for (no ledger, no nonce)."""
SAVED.set_result(None)


class NonceRegistry:
    """Signature nonces seen recently, each kept until its request date is out of the window.

    With a ledger, the nonces also outlive the process: the ones still in their window are
    loaded when the registry is made, and each new one is committed before its request is
    processed (`use` hands out a future to wait for). So a request captured at any moment
    cannot be replayed after a restart, not even right after a `kill -9`. One writer thread
    saves the nonces: each batch holds every nonce that arrived while the one before was being
    written (group commit), so concurrent requests share a transaction, and waiting for it
    blocks neither the event loop nor a thread of the pool.

    `inline`: commit each nonce in the caller's thread instead (SQLite, whose nonces live in
    a file of their own: a commit there takes a tenth of a millisecond, less than handing the
    nonce to the writer thread and back); the writer thread then only retries failures.
    """

    def __init__(self, clock: Callable[[], float] = time.time,
                 ledger: NonceLedger | None = None, inline: bool = False) -> None:
        self.clock = clock
        self._inline = inline
        self._committing = threading.Lock()
        self._seen: set[Nonce] = set()
        self._expiry: list[tuple[float, Nonce]] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._ledger = ledger
        self._unsaved: list[tuple[Nonce, float, Future[None]]] = []
        self._closed = threading.Event()
        self._writer: threading.Thread | None = None
        if ledger is not None:
            for entry, expires in ledger.recent():
                self._remember(entry, expires)
            self._writer = threading.Thread(target=self._write, daemon=True,
                                            name="batchyard-nonces")
            self._writer.start()

    def first_use(self, key_id: str, nonce: str, dated: float) -> bool:
        """Record the nonce; False when the key already used it inside the window."""
        return self.use(key_id, nonce, dated) is not None

    def use(self, key_id: str, nonce: str, dated: float) -> Future[None] | None:
        """Record the nonce: None when the key already used it inside the window, else a
        future done once the nonce is saved (failed when it cannot be)."""
        entry = (key_id, nonce_digest(nonce))
        with self._lock:
            self._forget_expired()
            if entry in self._seen:
                return None
            expires = max(dated, self.clock()) + ALLOWED_SKEW
            self._remember(entry, expires)
            if self._ledger is None:
                return SAVED
            saved: Future[None] = Future()
            if self._closed.is_set():
                saved.set_exception(RuntimeError("the server is shutting down"))
                return saved
            if not self._inline:
                self._unsaved.append((entry, expires, saved))
                self._arrived.notify()
                return saved
        with self._committing:
            self._save([(entry, expires, saved)])
        return SAVED if saved.exception() is None else saved  # (done: a shared one will do)

    def close(self) -> None:
        """Save the nonces not yet saved, and stop the writer."""
        with self._lock:
            self._closed.set()
            self._arrived.notify()
        if self._writer is not None:
            self._writer.join()
        if self._ledger is not None:
            self._ledger.close()

    def _write(self) -> None:
        """The writer thread: saves the nonces that arrived, a batch per transaction."""
        while batch := self._next_batch():
            self._save(batch)

    def _next_batch(self) -> list[tuple[Nonce, float, Future[None]]]:
        """Every nonce not yet saved, once there is one; nothing once closed and all saved."""
        with self._lock:
            while not self._unsaved and not self._closed.is_set():
                self._arrived.wait()
            batch, self._unsaved = self._unsaved, []
            return batch

    def _save(self, batch: list[tuple[Nonce, float, Future[None]]]) -> None:
        assert self._ledger is not None
        waiting = [saved for _, _, saved in batch if saved.set_running_or_notify_cancel()]
        try:
            self._ledger.remember([(entry, expires) for entry, expires, _ in batch])
        except Exception as error:  # the database is busy or gone: their requests are refused
            log.exception("cannot save %d signature nonces; retrying", len(batch))
            for saved in waiting:
                saved.set_exception(error)
            self._retry(batch)
        else:
            for saved in waiting:
                saved.set_result(None)

    def _retry(self, batch: list[tuple[Nonce, float, Future[None]]]) -> None:
        """Save the nonces of a failed batch later all the same: their requests were refused,
        but a copy of one must still be refused after a restart, when memory is gone."""
        if self._closed.is_set():
            return  # nothing will write them any more (logged above)
        with self._lock:
            self._unsaved[:0] = [(entry, expires, Future()) for entry, expires, _ in batch]
            self._arrived.notify()
        if threading.current_thread() is self._writer:
            self._closed.wait(RETRY_DELAY)

    def _remember(self, entry: Nonce, expires: float) -> None:
        self._seen.add(entry)
        heapq.heappush(self._expiry, (expires, entry))

    def _forget_expired(self) -> None:
        now = self.clock()
        while self._expiry and self._expiry[0][0] < now:
            _, entry = heapq.heappop(self._expiry)
            self._seen.discard(entry)


@dataclass(frozen=True)
class Verified:
    """A request whose signature holds: who sent it, and the saving of its nonce."""

    caller: Caller
    nonce_saved: Future[None] = SAVED
    """Done once the nonce is in the database: the request must not be processed before."""


class Authenticator:
    """Verifies signed requests against the key store."""

    def __init__(self, keys: KeyStore, clock: Callable[[], float] = time.time,
                 nonces: NonceRegistry | None = None, allow_missing_nonce: bool = False) -> None:
        self.keys = keys
        self.clock = clock
        self.nonces = nonces if nonces is not None else NonceRegistry(clock)
        self.allow_missing_nonce = allow_missing_nonce
        """A request without a nonce can be replayed, unchanged, for 15 minutes: such requests
        are refused unless this compatibility setting lets them through."""

    def verify(self, method: str, target: str, headers: Mapping[str, str]) -> Verified:
        """The caller of a request; `headers` has lower-case names, `target` is raw.

        The request may be processed once `nonce_saved` is done without an error."""
        key_id, signed = _credentials(headers)
        key = self._active_key(key_id)
        _check_version(headers)
        dated = self._check_date(headers)
        text = string_to_sign(method, target, headers)
        if not matches(signature(key.secret, text), signed):
            raise BadRequest(f"the signature does not match; the server signed {text!r}",
                             code="InvalidSignature")
        saved = self._use_nonce(key.id, headers.get("x-acs-signature-nonce", ""), dated)
        return Verified(Caller(key.tenant, key.id), saved)

    def _use_nonce(self, key_id: str, nonce: str, dated: float) -> Future[None]:
        if not nonce:
            if self.allow_missing_nonce:
                return SAVED
            raise BadRequest("the request has no x-acs-signature-nonce header: send a fresh "
                             "unique value (a UUID) with every request, and sign it",
                             code="MissingSignatureNonce")
        saved = self.nonces.use(key_id, nonce, dated)
        if saved is None:
            raise AccessDenied(f"x-acs-signature-nonce {nonce!r} was already used",
                               code="SignatureNonceUsed")
        return saved

    def _active_key(self, key_id: str) -> AccessKey:
        key = self.keys.lookup(key_id)
        if key is None:
            raise AccessDenied(f"access key {key_id!r} does not exist",
                               code="InvalidAccessKeyId.NotFound")
        if not key.active:
            raise AccessDenied(f"access key {key_id!r} was revoked",
                               code="InvalidAccessKeyId.Inactive")
        return key

    def _check_date(self, headers: Mapping[str, str]) -> float:
        dated = request_date(headers)
        if abs(dated - self.clock()) > ALLOWED_SKEW:
            raise AccessDenied("the request date is more than 15 minutes away from the "
                               "server's clock", code="RequestTimeTooSkewed")
        return dated


def _credentials(headers: Mapping[str, str]) -> tuple[str, str]:
    parsed = parse_authorization(headers.get("authorization", ""))
    if parsed is None:
        raise AccessDenied("the request is not signed: send Authorization: acs <AccessKeyId>:"
                           "<Signature>", code="MissingAuthorization")
    declared = headers.get("x-acs-access-key-id")
    if declared is not None and declared != parsed[0]:
        raise BadRequest("x-acs-access-key-id differs from the key id in Authorization",
                         code="InvalidSignature")
    return parsed


def _check_version(headers: Mapping[str, str]) -> None:
    version = headers.get("x-acs-version", API_VERSION)
    if version != API_VERSION:
        raise AccessDenied(f"API version {version!r} is not supported; use {API_VERSION}",
                           code="InvalidVersion.NotFound")


def request_date(headers: Mapping[str, str]) -> float:
    """Epoch seconds of `Date` (RFC 822), or of `x-acs-date` (RFC 822 or ISO 8601)."""
    text = headers.get("date") or headers.get("x-acs-date")
    if not text:
        raise BadRequest("the request has no Date header", code="MissingDate")
    return _parsed_date(text)


@lru_cache(maxsize=256)
def _parsed_date(text: str) -> float:
    """Clients send the current second: most requests repeat a date just parsed."""
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        moment = _iso_date(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _iso_date(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Date {text!r} is not an RFC 822 date such as "
                         "'Mon, 02 Jan 2017 03:04:05 GMT'", code="InvalidDate") from None
