"""The submit page: paste or upload a job description, see what is wrong with it (each
problem with its JSON path, beside the text), then submit; the browser goes to the new job.

Unknown fields (likely typos, accepted by the API with a warning) are shown first: the job
is submitted only once the person has seen them and chosen "Submit anyway". The form
carries an idempotency token, so a double click or a reload submits one job.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from batchyard.api.authentication import Caller
from batchyard.api.jobs import submit
from batchyard.api.services import services_of
from batchyard.api.warnings import MAX_LISTED
from batchyard.console.sessions import FormViewer, ViewerDependency
from batchyard.console.web import PREFIX, ConsoleRoute, render
from batchyard.domain.fields import UnknownField, unknown_fields
from batchyard.domain.spec import JobDescription, parse_job
from batchyard.errors import ABSENT, BatchyardError, Problem, SpecError

router = APIRouter(route_class=ConsoleRoute)
MAX_BODY = 1024 * 1024
"""The largest description accepted, as the API's request bodies."""
EXAMPLE = {
    "Name": "hello", "Type": "DAG", "Description": "echo on 3 instances",
    "JobFailOnInstanceFail": True, "Priority": 1,
    "DAG": {"Tasks": {"hello": {
        "InstanceCount": 3, "MaxRetryCount": 1, "Timeout": 600,
        "AutoCluster": {"InstanceType": "ecs.sn1.medium", "ImageId": "img-ubuntu"},
        "Parameters": {"Command": {
            "CommandLine": "sh -c 'echo hello from instance $BATCH_COMPUTE_DAG_INSTANCE_ID'"}}}},
        "Dependencies": {}},
}


@dataclass(frozen=True)
class Parsed:
    """A text read as JSON: the value, or the problems (a JSON syntax error names where)."""

    value: Any
    problems: list[Problem] = field(default_factory=list)


def parse_text(text: str) -> Parsed:
    if not text.strip():
        return Parsed(None, [Problem("InvalidHttpBody", "$", "", "paste a JSON object")])
    try:
        return Parsed(json.loads(text))
    except json.JSONDecodeError as error:
        return Parsed(None, [Problem(
            "InvalidHttpBody", "$", text[max(0, error.pos - 20):error.pos + 20],
            f"is not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}")])
    except RecursionError:
        return Parsed(None, [Problem("InvalidHttpBody", "$", "", "is nested too deeply")])


@router.get("/submit", response_class=HTMLResponse)
async def submit_form(request: Request, viewer: ViewerDependency) -> Response:
    return _form(request, json.dumps(EXAMPLE, indent=2), [], [])


def _form(request: Request, text: str, problems: list[Problem],
          warnings: list[UnknownField], status: int = 200, token: str = "") -> Response:
    return render(request, "submit.html", {
        "text": text, "problems": problems, "warnings": warnings,
        "token": token or secrets.token_urlsafe(16)}, status=status)


@router.post("/submit", response_class=HTMLResponse)
async def submit_job(request: Request, viewer: FormViewer,
                     body: Annotated[str, Form(max_length=MAX_BODY)] = "",
                     file: Annotated[UploadFile | None, File()] = None,
                     token: Annotated[str, Form(max_length=64)] = "",
                     anyway: Annotated[str, Form(max_length=8)] = "",
                     check: Annotated[str, Form(max_length=8)] = "") -> Response:
    text = body
    if file is not None and file.filename:
        data = await file.read(MAX_BODY + 1)
        if len(data) > MAX_BODY:
            return _form(request, "", [Problem("InvalidHttpBody", "$", file.filename,
                                               "is larger than 1 MiB")], [], 400, token)
        text = data.decode("utf-8", "replace")
    parsed = parse_text(text)
    if parsed.problems:
        return _form(request, text, parsed.problems, [], 400, token)
    try:
        await run_in_threadpool(parse_job, parsed.value)
    except SpecError as error:
        return _form(request, text, error.problems, [], 400, token)
    warnings = unknown_fields(parsed.value, JobDescription, suggested=MAX_LISTED)
    if check or (warnings and not anyway):
        return _form(request, text, [], warnings, 200, token)
    services = services_of(request)
    try:
        job_id = await run_in_threadpool(submit, services, Caller(viewer.tenant, viewer.key_id),
                                         parsed.value, token)
    except BatchyardError as error:  # the engine's own checks (buckets, clusters, types)
        problems = error.problems if isinstance(error, SpecError) else [
            Problem(error.code, "$", ABSENT, str(error))]
        return _form(request, text, problems, warnings, error.status, token)
    return RedirectResponse(f"{PREFIX}/jobs/{job_id}?submitted=1", status_code=303)
