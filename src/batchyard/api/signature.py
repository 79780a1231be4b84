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
from collections.abc import Mapping

PROVIDER = "acs"
SIGNED_PREFIX = "x-acs-"


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
    digest = hmac.new(secret.encode("utf-8"), text.encode("latin-1"), hashlib.sha1).digest()
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
