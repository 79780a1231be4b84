"""Every API failure as BatchCompute's JSON error body (reference §9.8), mapped in one place.

Body: `{"Code", "Message", "RequestId", "HostId"}` — plus `Problems` (code, path, rule of
each) when a job description is invalid. The request id is also in the `x-acs-request-id`
header of every response (see `middleware`).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from batchyard.errors import BatchyardError, SpecError

CODES_BY_STATUS = {
    400: "InvalidParameter", 401: "Forbidden", 403: "Forbidden", 404: "InvalidUrlPattern",
    405: "MethodNotAllowed", 409: "StateConflict", 413: "RequestBodyTooLarge",
}


class BadRequest(BatchyardError):
    """A request the API refuses before it reaches the engine (query, body, headers)."""

    status = 400


class AccessDenied(BatchyardError):
    """Authentication failed for a reason other than a wrong signature."""

    status = 403


class Unavailable(BatchyardError):
    """The server cannot take the request now (e.g. its database is gone); try again later."""

    code = "ServiceUnavailable"
    status = 503


class BodyTooLarge(BatchyardError):
    code = "RequestBodyTooLarge"
    status = 413


def request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def error_body(request: Request, code: str, message: str) -> dict[str, Any]:
    return {"Code": code, "Message": message, "RequestId": request_id(request),
            "HostId": request.headers.get("host", "")}


def error_response(request: Request, status: int, code: str, message: str,
                   **extra: Any) -> JSONResponse:
    return JSONResponse({**error_body(request, code, message), **extra}, status_code=status)


async def on_batchyard_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, BatchyardError)
    if isinstance(error, SpecError):
        problems = [{"Code": p.code, "Path": p.path, "Message": str(p)} for p in error.problems]
        return error_response(request, error.status, error.code, error.message,
                              Problems=problems)
    return error_response(request, error.status, error.code, error.message)


async def on_http_error(request: Request, error: Exception) -> JSONResponse:
    """Starlette's own errors: unknown route (404), wrong method (405)."""
    assert isinstance(error, HTTPException)
    code = CODES_BY_STATUS.get(error.status_code, "InvalidParameter")
    if error.status_code == 404:
        message = f"no resource at {request.method} {request.url.path}"
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(error.detail)
    response = error_response(request, error.status_code, code, message)
    response.headers.update(error.headers or {})
    if error.status_code == 405:
        response.headers["allow"] = ", ".join(_allowed_methods(request))
    return response


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route accepts on this path (Starlette names only the first route's)."""
    scope = {**request.scope, "method": ""}
    methods: set[str] = set()
    for route in getattr(request.app.state, "api_routes", []):
        if route.matches(scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)


async def on_validation_error(request: Request, error: Exception) -> JSONResponse:
    """FastAPI's 422 never leaks: the first problem becomes `Invalid<Field>` / `Missing<Field>`."""
    assert isinstance(error, RequestValidationError)
    problems = [_describe(item) for item in error.errors()]
    code = problems[0][0] if problems else "InvalidParameter"
    return error_response(request, 400, code, "; ".join(text for _, text in problems))


def _describe(item: Any) -> tuple[str, str]:
    location = [str(part) for part in item.get("loc", ()) if part not in ("query", "path")]
    field = location[-1] if location else "Parameter"
    if item.get("type") == "missing":
        return f"Missing{field}", f"{field} is required"
    context = item.get("ctx") or {}
    reason = str(context["error"]) if "error" in context else str(item.get("msg", "invalid"))
    reason = reason.replace("Input should be", "must be").replace("String should", "must")
    return f"Invalid{field}", f"{field} {reason} (got {item.get('input')!r})"


def install(app: FastAPI) -> None:
    app.add_exception_handler(BatchyardError, on_batchyard_error)
    app.add_exception_handler(HTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
