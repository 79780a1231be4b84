"""Reading a request body as one JSON object, within a size limit."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from batchyard.api.errors import BadRequest, BodyTooLarge

MAX_BODY_BYTES = 1 << 20
"""Largest accepted body: 1 MiB (a job description with thousands of tasks fits)."""


async def json_object(request: Request, limit: int = MAX_BODY_BYTES) -> dict[str, Any]:
    """The body as a dict: 413 `RequestBodyTooLarge`, 400 `InvalidJsonFormat` or
    400 `InvalidHttpBody` otherwise."""
    raw = await _read(request, limit)
    if not raw.strip():
        raise BadRequest("the request body must be a JSON object; it is empty",
                         code="InvalidHttpBody")
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise BadRequest(f"the request body is not valid JSON: {error}",
                         code="InvalidJsonFormat") from None
    if not isinstance(value, dict):
        raise BadRequest(f"the request body must be a JSON object, not {_kind(value)}",
                         code="InvalidHttpBody")
    return value


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
