"""`/jobs`: create, list, get (status or description), stop, start, delete, change priority."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from batchyard.api.authentication import Caller
from batchyard.api.bodies import json_object
from batchyard.api.errors import BadRequest, on_batchyard_error
from batchyard.api.middleware import Answer
from batchyard.api.paging import CreateQuery, JobListQuery
from batchyard.api.representation import (
    description_view,
    job_view,
    json_bytes,
    json_headers,
    page_view,
    status_json,
)
from batchyard.api.services import (
    CallerDependency,
    Services,
    ServicesDependency,
    nonce_committed,
    verify,
)
from batchyard.api.warnings import MAX_LISTED, warning_headers, warnings_body
from batchyard.domain.fields import unknown_fields
from batchyard.domain.spec import JobDescription, parse_job
from batchyard.errors import BatchyardError, NotFound, TokenTaken
from batchyard.ports.store import IdempotencyToken

router = APIRouter(tags=["jobs"])



def _json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An OpenAPI requestBody for routes that read and validate their JSON body themselves
    (so errors come out as BatchCompute codes, not FastAPI's 422)."""
    return {"requestBody": {"required": True, "description": description,
                            "content": {"application/json": {"schema": schema}}}}


def _inlined(schema: Any, definitions: dict[str, Any]) -> Any:
    """The schema with every `$ref` to its `$defs` replaced by the definition itself."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inlined(definitions[schema["$ref"].rsplit("/", 1)[1]], definitions)
        return {key: _inlined(value, definitions) for key, value in schema.items()
                if key != "$defs"}
    if isinstance(schema, list):
        return [_inlined(item, definitions) for item in schema]
    return schema


_JOB_SCHEMA = JobDescription.model_json_schema()
JOB_BODY = _json_body(_inlined(_JOB_SCHEMA, _JOB_SCHEMA.get("$defs", {})),
                      "A BatchCompute job description (Type DAG), as the official SDK sends it")
PRIORITY_BODY = _json_body(
    {"type": "object", "required": ["Priority"],
     "properties": {"Priority": {"type": "integer", "minimum": 0, "maximum": 1000}}},
    "The new priority; the job must be Stopped or Failed")

@router.post("/jobs", status_code=201, openapi_extra=JOB_BODY, response_model=dict[str, Any])
async def create_job(request: Request, query: Annotated[CreateQuery, Query()],
                     caller: CallerDependency, services: ServicesDependency) -> Response:
    """Submit a job description; 201 `{"Id": "job-…"}`, plus `Warnings` (and a `Warning`
    header each) for unknown fields, which are accepted but likely typos."""
    body = await json_object(request)
    return await run_in_threadpool(_created, services, caller, body, query.IdempotentToken)


def _created(services: Services, caller: Caller, body: dict[str, Any], token: str) -> Response:
    """Submit, then answer with the unknown fields of `body` as warnings (in a thread: a
    1 MiB body can hold thousands of them)."""
    job_id = submit(services, caller, body, token)
    unknown = unknown_fields(body, JobDescription, suggested=MAX_LISTED)
    answer = JSONResponse({"Id": job_id, **({"Warnings": warnings_body(unknown)} if unknown
                                            else {})}, status_code=201)
    for value in warning_headers(unknown):
        answer.headers.append("Warning", value)
    return answer


def submit(services: Services, caller: Caller, body: dict[str, Any], token: str) -> str:
    """Submit once per idempotency token: a repeated token returns the first job's id.

    The token is stored with the job, in one transaction (see `SqlStore.create_job`): a
    request that lost a race to another with the same token, or a retry after the server
    died, finds the job that token made.
    """
    if not token:
        return services.engine.submit(parse_job(body), caller.tenant)
    digest = body_digest(body)
    earlier = services.tokens.find(caller.tenant, "jobs", token)
    if earlier is not None:
        return earlier.resolved(token, digest)
    try:
        return services.engine.submit(parse_job(body), caller.tenant,
                                      IdempotencyToken("jobs", token, digest))
    except TokenTaken:
        earlier = services.tokens.find(caller.tenant, "jobs", token)
        if earlier is None:
            raise
        return earlier.resolved(token, digest)


def body_digest(body: dict[str, Any]) -> str:
    """Equal JSON values give equal digests, whatever the key order or spacing."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@router.get("/jobs")
def list_jobs(query: Annotated[JobListQuery, Query()], caller: CallerDependency,
              services: ServicesDependency) -> dict[str, Any]:
    """The caller's jobs, newest first (`IsReverse=true`: oldest first)."""
    page = services.reads.list_jobs(caller.tenant, query.window(query.IsReverse))
    return page_view(page, job_view)


@router.get("/jobs/{job_id}", response_model=dict[str, Any])
async def get_job(job_id: str, request: Request) -> Response:
    """The job's status; with the bare `?description` parameter, its description."""
    # Served by `application.Api` (through `middleware.Front` and `job_answer`), before
    # FastAPI's routing; the route documents it (OpenAPI) and answers under a root path.
    status, headers, body = await job_answer(request.scope, job_id)
    response = Response(body, status_code=status)
    response.raw_headers = headers
    return response


async def job_answer(scope: Scope, job_id: str) -> Answer:
    """`GET /jobs/{job_id}` as a whole response, from the request's scope; errors are the
    answers FastAPI's handlers give (`errors.on_batchyard_error`).

    The hottest route, kept lean: no dependency injection (it costs more than the read
    itself), and the read overlaps the commit of the nonce — a read changes nothing, so
    only its answer must wait for the commit."""
    try:
        services: Services = scope["app"].state.services
        verified = await verify(services, scope)
        described = _asks_description(scope)
        read = services.reads.job if described else (services.job_status or services.reads.job)
        try:
            job = await services.read(read, job_id, verified.caller.tenant)
        finally:
            await nonce_committed(verified)
        if job is None:
            raise NotFound(f"job {job_id} does not exist")
        body = json_bytes(description_view(job)) if described else status_json(job_view(job))
        return 200, json_headers(body), body
    except BatchyardError as error:
        answer = await on_batchyard_error(Request(scope), error)
        return answer.status_code, list(answer.raw_headers), bytes(answer.body)


def _asks_description(scope: Scope) -> bool:
    """Whether the query has a `description` parameter (as `request.query_params` reads it)."""
    query: bytes = scope.get("query_string", b"")
    return bool(query) and any(name == "description" for name, _ in parse_qsl(
        query.decode("latin-1"), keep_blank_values=True))


@router.post("/jobs/{job_id}/stop", status_code=201)
def stop_job(job_id: str, caller: CallerDependency,
             services: ServicesDependency) -> dict[str, Any]:
    services.engine.stop(job_id, caller.tenant)
    return {}


@router.post("/jobs/{job_id}/start", status_code=201)
def start_job(job_id: str, caller: CallerDependency,
              services: ServicesDependency) -> dict[str, Any]:
    services.engine.restart(job_id, caller.tenant)
    return {}


@router.delete("/jobs/{job_id}", status_code=204)
def delete_job(job_id: str, caller: CallerDependency, services: ServicesDependency) -> Response:
    services.engine.delete(job_id, caller.tenant)
    return Response(status_code=204)


@router.put("/jobs/{job_id}", openapi_extra=PRIORITY_BODY)
async def change_priority(job_id: str, request: Request, caller: CallerDependency,
                          services: ServicesDependency) -> dict[str, Any]:
    """Body `{"Priority": n}`, n in [0, 1000]; the job must be Stopped or Failed."""
    body = await json_object(request)
    if "Priority" not in body:
        raise BadRequest("the body must hold Priority, e.g. {\"Priority\": 100}",
                         code="MissingPriority")
    await run_in_threadpool(services.engine.change_priority, job_id, body["Priority"],
                            caller.tenant)
    return {}
