"""The BatchCompute request signature (reference §9.3), byte for byte as the official SDK.

    StringToSign = VERB \n Accept \n Content-MD5 \n Content-Type \n Date \n
                   CanonicalizedHeaders CanonicalizedResource
    Authorization = "acs " + AccessKeyId + ":" + base64(HMAC-SHA1(secret, StringToSign))

Header names are lower case; `target` is the raw request target (path and query exactly as
on the request line, never decoded and re-encoded).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Mapping
from email.utils import formatdate

PROVIDER = "acs"
SIGNED_PREFIX = "x-acs-"
API_VERSION = "2015-11-11"


def string_to_sign(method: str, target: str, headers: Mapping[str, str]) -> str:
    """The text the client signed; `headers` maps lower-case names to values."""
    canonical = "".join(f"{name}:{headers[name]}\n" for name in sorted(headers)
                        if name.startswith(SIGNED_PREFIX))
    return "\n".join([
        method,
        headers.get("accept", "").strip(),
        headers.get("content-md5", "").strip(),
        headers.get("content-type", "").strip(),
        headers.get("date", ""),
        canonical + target,
    ])


def signature(secret: str, text: str) -> str:
    """base64(HMAC-SHA1(secret, text)); text is encoded as latin-1, i.e. the raw header bytes."""
    digest = hmac.digest(secret.encode("utf-8"), text.encode("latin-1"), "sha1")
    return base64.b64encode(digest).decode("ascii")


def authorization(key_id: str, secret: str, method: str, target: str,
                  headers: Mapping[str, str]) -> str:
    """The `Authorization` header value a client sends for this request."""
    return f"{PROVIDER} {key_id}:{signature(secret, string_to_sign(method, target, headers))}"


def parse_authorization(value: str) -> tuple[str, str] | None:
    """`acs <AccessKeyId>:<signature>` -> (key id, signature); None when malformed."""
    provider, _, credentials = value.strip().partition(" ")
    key_id, separator, signed = credentials.strip().partition(":")
    if provider != PROVIDER or not separator or not key_id or not signed:
        return None
    return key_id, signed


def matches(expected: str, given: str) -> bool:
    """Constant-time comparison of two signatures."""
    return hmac.compare_digest(expected.encode("ascii", "replace"),
                               given.encode("ascii", "replace"))


def content_md5(body: bytes) -> str:
    """The `Content-MD5` header of a body: the base64 of its MD5 (RFC 1864).

    MD5 is the digest the protocol names; signed, it binds the body to the signature (a
    second preimage of MD5 is still out of reach)."""
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode("ascii")


def signed_headers(key_id: str, secret: str, method: str, target: str,
                   region: str = "local", now: float | None = None,
                   body: bytes = b"") -> dict[str, str]:
    """The headers the official SDK sends, signed: for clients of `batchyard serve`.

    With a body, also a `content-md5` header (which the SDK does not send): it is part of the
    signed text, so the body cannot be replaced after signing.
    """
    headers = {
        "accept": "application/json", "content-type": "application/json",
        "date": formatdate(time.time() if now is None else now, usegmt=True),
        "x-acs-region-id": region, "x-acs-access-key-id": key_id,
        "x-acs-signature-method": "HMAC-SHA1", "x-acs-signature-version": "1.0",
        "x-acs-version": API_VERSION, "x-acs-signature-nonce": str(uuid.uuid4()),
    }
    if body:
        headers["content-md5"] = content_md5(body)
    headers["authorization"] = authorization(key_id, secret, method, target, headers)
    return headers
