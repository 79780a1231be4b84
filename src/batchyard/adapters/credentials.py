"""Access keys and idempotency tokens of the REST API, kept in the state database.

An access key (id + secret) belongs to one tenant; requests signed with it act as that
tenant. Secrets are stored encrypted (Fernet) with a per-installation master key kept in a
file of the data directory (mode 0600); they are shown once, when the key is created, and
never logged. Idempotency tokens (reference §9.7) remember, per tenant, which job a token
created and a digest of the body that created it. Signature nonces are remembered (as
digests) until their request date leaves the 15-minute window, so that a captured request
cannot be replayed after the server restarts.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import stat
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Engine, Float, String, Table, Text, bindparam, select
from sqlalchemy.dialects import sqlite as sqlite_dialect

from batchyard.adapters.database import insert_ignoring_duplicates, migrate, open_engine
from batchyard.adapters.reads import CompiledQuery, SqliteFile
from batchyard.adapters.schema import metadata
from batchyard.errors import BatchyardError, IdempotentTokenMismatch, NotFound

if TYPE_CHECKING:  # imported where keys are read or made: `batchyard run` never is
    from cryptography.fernet import Fernet

MASTER_KEY_FILE = "master.key"
KEY_ID_ALPHABET = string.ascii_uppercase + string.digits
TENANT_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_.-")
TOKEN_RETENTION = 7 * 24 * 3600.0
"""Seconds an idempotency token is remembered (the reference asks for at least 24 h)."""

access_keys = Table(
    "access_keys", metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("secret", Text, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("created", Float, nullable=False),
    Column("revoked", Float),
)

idempotency_tokens = Table(
    "idempotency_tokens", metadata,
    Column("tenant", String(64), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("token", String(64), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False, default=""),
    Column("created", Float, nullable=False, index=True),
)


signature_nonces = Table(
    "signature_nonces", metadata,
    Column("key_id", String(32), primary_key=True),
    Column("digest", String(40), primary_key=True),
    Column("expires", Float, nullable=False, index=True),
)


class CredentialError(BatchyardError):
    """The master key file or a tenant name cannot be used."""

    code = "InvalidCredentials"
    status = 400


@dataclass(frozen=True)
class AccessKey:
    """What is known about a key; `secret` is filled only for authentication and creation."""

    id: str
    tenant: str
    description: str
    created: float
    revoked: float | None
    secret: str = field(default="", repr=False)

    @property
    def active(self) -> bool:
        return self.revoked is None


def open_database(url: str) -> Engine:
    """A SQLAlchemy engine for the state database, migrated to the newest schema."""
    return open_engine(url)


def create_tables(database: Engine) -> None:
    """Make sure this module's tables exist (the migrations own the schema)."""
    migrate(database)


# ---- the master key ---------------------------------------------------------------------


def master_key(data_dir: Path) -> Fernet:
    """The installation's master key, created (mode 0600) on first use."""
    from cryptography.fernet import Fernet

    path = data_dir / MASTER_KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_master_key(path)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(Fernet.generate_key())
    return _read_master_key(path)


def _read_master_key(path: Path) -> Fernet:
    from cryptography.fernet import Fernet

    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise CredentialError(f"{path} must be readable by its owner only: chmod 600 {path}")
    try:
        return Fernet(path.read_bytes().strip())
    except ValueError as error:
        raise CredentialError(f"{path} does not hold a valid master key") from error


# ---- access keys ------------------------------------------------------------------------


class KeyStore:
    """Creates, lists, revokes and looks up access keys."""

    def __init__(self, database: Engine, cipher: Fernet,
                 clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.cipher = cipher
        self.clock = clock
        self._secrets: dict[str, tuple[str, str]] = {}
        """key id -> (stored ciphertext, its plaintext): each secret is decrypted once."""
        self._file = SqliteFile.behind(database)
        """Every request looks its key up: with SQLite, on a plain sqlite3 connection."""
        create_tables(database)

    def create(self, tenant: str, description: str = "") -> AccessKey:
        """A new active key for `tenant`; the returned value is the only one holding the secret."""
        check_tenant(tenant)
        key = AccessKey(id=_new_key_id(), tenant=tenant, description=description,
                        created=self.clock(), revoked=None, secret=secrets.token_urlsafe(22))
        with self.database.begin() as connection:
            connection.execute(access_keys.insert(), [{
                "id": key.id, "tenant": tenant, "description": description,
                "created": key.created, "revoked": None,
                "secret": self.cipher.encrypt(key.secret.encode()).decode("ascii"),
            }])
        return key

    def list(self, tenant: str | None = None) -> list[AccessKey]:
        """Every key (of one tenant, if given), oldest first, without secrets."""
        query = select(access_keys).order_by(access_keys.c.created, access_keys.c.id)
        if tenant is not None:
            query = query.where(access_keys.c.tenant == tenant)
        with self.database.connect() as connection:
            return [_key(row) for row in connection.execute(query)]

    def revoke(self, key_id: str) -> AccessKey:
        """Mark a key revoked; requests signed with it are refused from now on."""
        with self.database.begin() as connection:
            connection.execute(
                access_keys.update()
                .where(access_keys.c.id == key_id, access_keys.c.revoked.is_(None))
                .values(revoked=self.clock()))
            row = connection.execute(select(access_keys).where(access_keys.c.id == key_id)).first()
        if row is None:
            raise NotFound(f"access key {key_id} does not exist")
        return _key(row)

    def lookup(self, key_id: str) -> AccessKey | None:
        """The key with its decrypted secret, or None when there is no such key.

        The row is read on every call (a revocation, even by another process, counts at
        once); only the decryption of an unchanged secret is remembered.
        """
        if self._file is not None:
            row = _SQLITE_KEY_ROW.first(self._file, {"b_id": key_id})
        else:
            with self.database.connect() as connection:
                row = connection.execute(_KEY_ROW, {"b_id": key_id}).first()
        if row is None:
            return None
        return _key(row, self._decrypted(key_id, row.secret))

    def _decrypted(self, key_id: str, stored: str) -> str:
        known = self._secrets.get(key_id)
        if known is not None and known[0] == stored:
            return known[1]
        from cryptography.fernet import InvalidToken

        try:
            secret = self.cipher.decrypt(stored.encode("ascii")).decode()
        except InvalidToken as error:
            raise CredentialError(
                f"access key {key_id} was encrypted with another master key") from error
        self._secrets[key_id] = (stored, secret)
        return secret


_KEY_ROW = select(access_keys).where(access_keys.c.id == bindparam("b_id"))
_SQLITE_KEY_ROW = CompiledQuery(_KEY_ROW, sqlite_dialect.dialect())


def check_tenant(tenant: str) -> None:
    if not 1 <= len(tenant) <= 64 or not set(tenant) <= TENANT_CHARACTERS:
        raise CredentialError(
            f"tenant {tenant!r}: use 1-64 letters, digits, '_', '.' or '-'", code="InvalidTenant")


def _new_key_id() -> str:
    return "BY" + "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(18))


def _key(row: Any, secret: str = "") -> AccessKey:
    return AccessKey(id=row.id, tenant=row.tenant, description=row.description,
                     created=row.created, revoked=row.revoked, secret=secret)


# ---- idempotency tokens -----------------------------------------------------------------


@dataclass(frozen=True)
class TokenRecord:
    """What an idempotency token made, and the digest of the body it was sent with."""

    digest: str
    resource_id: str

    def resolved(self, token: str, digest: str) -> str:
        """The resource the token made, if `digest` is the body it was made with."""
        if digest != self.digest:
            raise IdempotentTokenMismatch(
                f"IdempotentToken {token!r} was already used with a different request")
        return self.resource_id


class TokenLedger:
    """Which resource an idempotency token created (reference §9.7), per tenant.

    Tokens are written by the store in the very transaction that creates the resource
    (`SqlStore.create_job`): a token either made its resource or does not exist, even
    across a `kill -9`, so a retry never waits and never makes a second resource.
    """

    def __init__(self, database: Engine, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.clock = clock
        self._purged = 0.0
        create_tables(database)

    def find(self, tenant: str, kind: str, token: str) -> TokenRecord | None:
        """The record of `token`, or None if it made nothing (yet, or within retention)."""
        self._purge()
        with self.database.connect() as connection:
            row = connection.execute(
                select(idempotency_tokens.c.digest, idempotency_tokens.c.resource_id)
                .where(*_token_is(tenant, kind, token))).first()
        return None if row is None else TokenRecord(row.digest, row.resource_id)

    def _purge(self) -> None:
        """Forget tokens older than TOKEN_RETENTION (at most once an hour)."""
        now = self.clock()
        if now - self._purged < 3600:
            return
        self._purged = now
        with self.database.begin() as connection:
            connection.execute(idempotency_tokens.delete().where(
                idempotency_tokens.c.created < now - TOKEN_RETENTION))


def _token_is(tenant: str, kind: str, token: str) -> tuple[Any, ...]:
    return (idempotency_tokens.c.tenant == tenant, idempotency_tokens.c.kind == kind,
            idempotency_tokens.c.token == token)


# ---- signature nonces -------------------------------------------------------------------


Nonce = tuple[str, str]
"""(access key id, digest of the nonce)."""


def nonce_digest(nonce: str) -> str:
    """Nonces are client-chosen text of any length: they are kept as a SHA-1 digest."""
    return hashlib.sha1(nonce.encode("utf-8"), usedforsecurity=False).hexdigest()


class NonceLedger:
    """The signature nonces still inside their replay window, in a database of batchyard's
    schema (the state database, or one of its own: see `beside`).

    With a SQLite file, nonces are written on one plain sqlite3 connection of the ledger's
    own (WAL, `synchronous=NORMAL` as every connection of batchyard's: a commit is in the
    WAL file, so it survives the end of the process, `kill -9` included, without an fsync),
    and the nonces whose window ended are deleted once a minute instead of before every
    commit: a commit is then one statement, about 20 µs of CPU instead of 120 µs through
    SQLAlchemy.
    """

    def __init__(self, database: Engine, clock: Callable[[], float] = time.time,
                 owned: bool = False) -> None:
        self.database = database
        self.clock = clock
        self._owned = owned
        """True when the ledger opened `database` itself, and so closes it."""
        create_tables(database)
        file = SqliteFile.behind(database)
        self._writer: sqlite3.Connection | None = None
        if file is not None:
            self._writer = sqlite3.connect(file.path, timeout=30, isolation_level=None,
                                           check_same_thread=False)
            self._writer.execute("PRAGMA journal_mode=WAL")
            self._writer.execute("PRAGMA synchronous=NORMAL")
        self._writing = threading.Lock()
        """One transaction at a time on `_writer` (the request's thread, the retry thread)."""
        self._purged = -PURGE_INTERVAL

    @classmethod
    def beside(cls, state: Engine, clock: Callable[[], float] = time.time) -> NonceLedger:
        """The ledger of a server whose state database is `state`.

        With PostgreSQL, `state` itself. With SQLite, a database file of its own next to it
        (`batchyard-nonces.db`): SQLite has one writer per file, and every request waits
        until its nonce is committed, so that commit must not wait behind the engine's
        writes. The nonces still in their window in `state` (saved by an older version) are
        carried over.
        """
        path = state.url.database
        if state.dialect.name != "sqlite" or not path or path == ":memory:":
            return cls(state, clock)
        own = Path(path).with_name(f"{Path(path).stem}-nonces{Path(path).suffix}")
        ledger = cls(open_engine(f"sqlite:///{own}"), clock, owned=True)
        older = cls(state, clock)
        try:
            ledger.remember(older.recent())
        finally:
            older.close()
        return ledger

    def recent(self) -> list[tuple[Nonce, float]]:
        """Every remembered nonce whose window has not ended, with its expiry time."""
        with self.database.connect() as connection:
            rows = connection.execute(select(signature_nonces).where(
                signature_nonces.c.expires >= self.clock())).all()
        return [((row.key_id, row.digest), row.expires) for row in rows]

    def remember(self, nonces: list[tuple[Nonce, float]]) -> None:
        """Store nonces (with their expiry), committed when this returns; forget those whose
        window has ended (first, so that a nonce used again after its window is stored
        again — on SQLite, where that is done once a minute, by keeping the later expiry)."""
        if self._writer is not None:
            self._remember_in_sqlite(nonces)
            return
        with self.database.begin() as connection:
            connection.execute(_FORGET_NONCES, {"b_now": self.clock()})
            if nonces:
                connection.execute(insert_ignoring_duplicates(connection, signature_nonces), [
                    {"key_id": key_id, "digest": digest, "expires": expires}
                    for (key_id, digest), expires in nonces])

    def _remember_in_sqlite(self, nonces: list[tuple[Nonce, float]]) -> None:
        assert self._writer is not None
        now = self.clock()
        rows = [(key_id, digest, expires) for (key_id, digest), expires in nonces]
        with self._writing:
            writer = self._writer
            if len(rows) == 1 and now - self._purged < PURGE_INTERVAL:
                # One statement, its own transaction (autocommit): one call into SQLite,
                # which is one release of the GIL (another thread may keep it a while).
                writer.execute(_SQLITE_REMEMBER_NONCE, rows[0])
                return
            writer.execute("BEGIN IMMEDIATE")
            try:
                if now - self._purged >= PURGE_INTERVAL:
                    writer.execute(_SQLITE_FORGET_NONCES, (now,))
                    self._purged = now
                writer.executemany(_SQLITE_REMEMBER_NONCE, rows)
                writer.execute("COMMIT")
            except BaseException:
                if writer.in_transaction:
                    writer.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the database if the ledger opened it."""
        if self._writer is not None:
            with self._writing:
                self._writer.close()
        if self._owned:
            self.database.dispose()


_FORGET_NONCES = signature_nonces.delete().where(signature_nonces.c.expires < bindparam("b_now"))
"""Built once: every batch of nonces runs it."""
PURGE_INTERVAL = 60.0
"""Seconds between two deletions of the nonces whose window ended (SQLite)."""
_SQLITE_FORGET_NONCES = "DELETE FROM signature_nonces WHERE expires < ?"
_SQLITE_REMEMBER_NONCE = (
    "INSERT INTO signature_nonces (key_id, digest, expires) VALUES (?, ?, ?) "
    "ON CONFLICT (key_id, digest) DO UPDATE SET expires = max(expires, excluded.expires)")
"""A nonce seen again after its window (its row not yet deleted) keeps the later expiry."""
