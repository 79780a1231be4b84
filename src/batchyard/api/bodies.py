"""Reading a request body as one JSON object: within a size limit, matching its digests."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from itertools import accumulate
from typing import Any

from fastapi import Request

from batchyard.api.errors import BadRequest, BodyTooLarge
from batchyard.api.services import services_of

MAX_BODY_BYTES = 1 << 20
"""Largest accepted body: 1 MiB (a job description with thousands of tasks fits)."""
MAX_DEPTH = 64
"""Deepest accepted nesting of arrays and objects (a job description needs about 8)."""

_STRING = re.compile(r'"[^"]*"')
"""A JSON string once its escaped backslashes and quotes are gone."""
_STEPS = bytes.maketrans(b"[]{}", b"\x01\xff\x01\xff")
"""An opening bracket as +1, a closing one as -1 (signed bytes)."""
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


async def json_object(request: Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The body as a dict: 413 `RequestBodyTooLarge`, 400 `InvalidContentMD5` /
    `MissingContentMD5` (see `check_digests`), 400 `InvalidJsonFormat` or 400 `InvalidHttpBody`
    otherwise."""
    raw = await _read(request, limit)
    check_digests(request, raw, services_of(request).settings.require_body_digest)
    if not raw.strip():
        raise BadRequest("the request body must be a JSON object; it is empty",
                         code="InvalidHttpBody")
    try:
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")  # as json.loads does
        check_nesting(raw, text)
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as error:
        raise BadRequest(f"the request body is not valid JSON: {error}",
                         code="InvalidJsonFormat") from None
    if not isinstance(value, dict):
        raise BadRequest(f"the request body must be a JSON object, not {_kind(value)}",
                         code="InvalidHttpBody")
    return value


def check_nesting(raw: bytes, text: str, limit: int = MAX_DEPTH) -> None:
    """ValueError when `text` nests arrays and objects deeper than `limit`.

    Run before `json.loads`, so that neither the parser nor anything after it (validation,
    storage, representation: all recursive) ever sees an unbounded structure; a scan at C
    speed (a few ms for 1 MiB). Brackets inside strings do not count: escaped backslashes,
    then escaped quotes, then whole strings are removed before the brackets are counted. On
    invalid JSON the scan may see more depth than the parser would, never less: the parser
    stops at the first invalid character, and up to it both read the text alike.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:  # in any encoding: no deeper than this
        return
    outside = _STRING.sub("", text.replace("\\\\", "").replace('\\"', ""))
    steps = outside.encode("utf-8", "surrogatepass").translate(_STEPS, _NOT_BRACKETS)
    if max(accumulate(memoryview(steps).cast("b")), default=0) > limit:
        raise ValueError(f"arrays and objects are nested deeper than {limit} levels")


def check_digests(request: Request, raw: bytes, required: bool) -> None:
    """The body is the one its client sent: it matches each digest header the request has.

    `Content-MD5` is in the signed text (reference §9.3), so it proves the body unchanged
    since signing; accepted as base64 (RFC 1864) or as 32 hex digits. The SDK's own
    `contentMd5` (lower-case hex, unsigned) only catches damage in transit. When `required`,
    a non-empty body must come with `Content-MD5`.
    """
    signed = request.headers.get("content-md5", "").strip() or None  # blank: signed as absent
    unsigned = request.headers.get("contentmd5", "").strip() or None
    if signed is None and required and raw:
        raise BadRequest("this server requires a signed Content-MD5 header (the base64 MD5 of "
                         "the body) with every request body", code="MissingContentMD5")
    if signed is None and unsigned is None:
        return
    digest = hashlib.md5(raw, usedforsecurity=False).digest()
    if signed is not None and not hmac.compare_digest(_md5_value(signed), digest):
        raise BadRequest("the body does not match its Content-MD5 header (the base64 or hex MD5 "
                         "of the body): it was changed after signing, or the digest is wrong",
                         code="InvalidContentMD5")
    if unsigned is not None and unsigned.lower() != digest.hex():
        raise BadRequest("the body does not match its contentMd5 header (the lower-case hex "
                         "MD5 of the body)", code="InvalidContentMD5")


def _md5_value(text: str) -> bytes:
    """The 16 bytes a Content-MD5 value spells (base64 or hex); b"" when it spells none."""
    try:
        value = bytes.fromhex(text) if len(text) == 32 else base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""
    return value if len(value) == 16 else b""


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(_too_large(limit))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(_too_large(limit))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _kind(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
