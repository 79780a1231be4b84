"""A client of `batchyard serve`: signed BatchCompute requests, answers as batchyard records.

Requests are signed like the official SDK (`batchyard.api.signature`); error answers become
`ApiError` carrying the BatchCompute `Code` and `Message` (and `Problems` of an invalid job).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from batchyard.cli.backends import EventBatch
from batchyard.cli.client_config import Connection
from batchyard.domain.derivation import Metrics
from batchyard.domain.pending import Pending, Why
from batchyard.domain.records import InstanceRecord, JobRecord, TaskRecord
from batchyard.domain.states import State
from batchyard.errors import BatchyardError

if TYPE_CHECKING:  # httpx is imported on first use: commands that never call a server
    import httpx  # (run, oss, keys) start faster without it

TIMEOUT_SECONDS = 30.0
PAGE_SIZE = 100
"""Items asked for per page when every item is wanted (the API's maximum)."""
_EPOCH = datetime.fromtimestamp(0, UTC)
_AUTHENTICATION_CODES = ("InvalidAccessKeyId", "InvalidSignature", "MissingAuthorization",
                         "SignatureNonceUsed", "RequestTimeTooSkewed")

Item = TypeVar("Item")


class ApiError(BatchyardError):
    """The server refused a request: HTTP status, BatchCompute Code and Message."""

    def __init__(self, status: int, code: str, message: str,
                 problems: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.problems = problems or []

    @property
    def line(self) -> str:
        """`StateConflict: job … is Running … (HTTP 409)`, plus a hint for key problems."""
        message = self.message.split("; the server signed")[0]  # not the string it signed
        text = f"{self.code}: {message} (HTTP {self.status})"
        if self.code.startswith(_AUTHENTICATION_CODES):
            text += (" — check --key-id/--key-secret (BATCHYARD_KEY_ID/BATCHYARD_KEY_SECRET); "
                     "`batchyard keys create` makes a key")
        return text


@dataclass(frozen=True)
class Created:
    """A job the server accepted, and the texts of its `Warning` headers (unknown fields)."""

    job_id: str
    warnings: list[str]


class Unreachable(BatchyardError):
    """No answer from the server at all."""

    code = "ServerUnreachable"


def _signer(key_id: str, secret: str) -> Callable[[httpx.Request], None]:
    """A request hook that signs each request on its raw target, exactly as it goes on the
    request line, and its body through a signed Content-MD5."""
    from batchyard.api.signature import signed_headers  # the api package loads FastAPI

    def sign(request: httpx.Request) -> None:
        target = request.url.raw_path.decode("ascii")
        request.headers.update(signed_headers(key_id, secret, request.method, target,
                                              body=request.content))

    return sign


def query_string(parameters: dict[str, str]) -> str:
    """The SDK's encoding (reference §9.4): sorted, nothing safe, blank values as bare keys."""
    parts = []
    for key in sorted(parameters):
        value = parameters[key]
        parts.append(quote(key, safe="") + (f"={quote(value, safe='')}" if value else ""))
    return "&".join(parts)


class RemoteClient:
    """The calls the CLI makes; one HTTP connection pool, closed with `close()` or `with`."""

    def __init__(self, connection: Connection, timeout: float = TIMEOUT_SECONDS) -> None:
        import httpx

        self.endpoint = connection.endpoint
        self._http = httpx.Client(
            base_url=connection.endpoint, timeout=timeout,
            event_hooks={"request": [_signer(connection.key_id, connection.key_secret)]})

    @property
    def where(self) -> str:
        return self.endpoint

    def __enter__(self) -> RemoteClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, query: dict[str, str] | None = None,
             body: Any = None) -> Any:
        """The decoded JSON answer (None when empty); ApiError for any non-2xx answer."""
        response = self.send(method, path, query, body)
        return response.json() if response.content else None

    def send(self, method: str, path: str, query: dict[str, str] | None = None,
             body: Any = None) -> httpx.Response:
        """The answer, headers and all; ApiError for any non-2xx answer."""
        import httpx

        target = path + (f"?{query_string(query)}" if query else "")
        try:
            response = self._http.request(method, target, json=body)
        except httpx.HTTPError as error:
            raise Unreachable(f"cannot reach {self.endpoint}: {_reason(error)}; is `batchyard "
                              "serve` running there? (set --endpoint or BATCHYARD_ENDPOINT)"
                              ) from None
        if not response.is_success:
            raise _api_error(response)
        return response

    def pages(self, path: str, convert: Callable[[dict[str, Any]], Item],
              query: dict[str, str] | None = None) -> list[Item]:
        """Every item of a list call, following NextMarker."""
        items: list[Item] = []
        marker = ""
        while True:
            page = self.call("GET", path, {**(query or {}), "Marker": marker,
                                           "MaxItemCount": str(PAGE_SIZE)})
            items += [convert(item) for item in page["Items"]]
            marker = str(page.get("NextMarker") or "")
            if not marker:
                return items

    def create_job(self, description: dict[str, Any]) -> Created:
        from batchyard.api.warnings import warning_texts

        response = self.send("POST", "/jobs", body=description)
        return Created(str(response.json()["Id"]),
                       warning_texts(response.headers.get_list("Warning")))

    def job(self, job_id: str) -> JobRecord:
        return job_record(self.call("GET", f"/jobs/{_segment(job_id)}"))

    def description(self, job_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("GET", f"/jobs/{_segment(job_id)}",
                                           {"description": ""})
        return answer

    def list_jobs(self, marker: str, count: int, state: State | None) -> tuple[list[JobRecord],
                                                                                str]:
        """One page of jobs, newest first, and the marker of the next page ("" when last)."""
        query = {"Marker": marker, "MaxItemCount": str(count)}
        if state is not None:
            query["State"] = state.value
        page = self.call("GET", "/jobs", query)
        return [job_record(item) for item in page["Items"]], str(page.get("NextMarker") or "")

    def tasks(self, job_id: str) -> list[TaskRecord]:
        return self.pages(f"/jobs/{_segment(job_id)}/tasks", task_parser(job_id))

    def task(self, job_id: str, task: str) -> TaskRecord:
        answer = self.call("GET", f"/jobs/{_segment(job_id)}/tasks/{_segment(task)}")
        return task_parser(job_id)(answer)

    def instances(self, job_id: str, task: str) -> list[InstanceRecord]:
        path = f"/jobs/{_segment(job_id)}/tasks/{_segment(task)}/instances"
        return self.pages(path, instance_parser(job_id, task))

    def instance(self, job_id: str, task: str, instance_id: int) -> InstanceRecord:
        path = f"/jobs/{_segment(job_id)}/tasks/{_segment(task)}/instances/{instance_id}"
        return instance_parser(job_id, task)(self.call("GET", path))

    def stop(self, job_id: str) -> None:
        self.call("POST", f"/jobs/{_segment(job_id)}/stop")

    def start(self, job_id: str) -> None:
        self.call("POST", f"/jobs/{_segment(job_id)}/start")

    def delete(self, job_id: str) -> None:
        self.call("DELETE", f"/jobs/{_segment(job_id)}")

    def change_priority(self, job_id: str, priority: int) -> None:
        self.call("PUT", f"/jobs/{_segment(job_id)}", body={"Priority": priority})


    def events(self, cursor: str, count: int, job_id: str = "") -> EventBatch:
        """`GET /events` (see `api.events`)."""
        page = self.call("GET", "/events", {"since": cursor, "MaxItemCount": str(count),
                                            "JobId": job_id})
        return list(page["Items"]), str(page["Cursor"]), bool(page["NextMarker"])


def _segment(text: str) -> str:
    return quote(text, safe="")


def _reason(error: httpx.HTTPError) -> str:
    import httpx

    if isinstance(error, httpx.ConnectError):
        return "connection refused" if "refused" in str(error).lower() else str(error)
    if isinstance(error, httpx.TimeoutException):
        return "no answer in time"
    return f"{type(error).__name__}: {error}"


def _api_error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "Code" not in body:
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return ApiError(response.status_code, f"HTTP{response.status_code}",
                        f"not a BatchCompute answer: {text}")
    problems = body.get("Problems")
    return ApiError(response.status_code, str(body["Code"]), str(body.get("Message", "")),
                    problems if isinstance(problems, list) else None)


def parse_time(text: Any) -> datetime | None:
    """`2024-05-01T08:00:03.125000Z` -> an aware datetime; "" or None -> None."""
    if not text:
        return None
    return datetime.fromisoformat(str(text)).astimezone(UTC)


def metrics(counts: dict[str, Any] | None) -> Metrics:
    counts = counts or {}
    return Metrics(*(int(counts.get(f"{name}Count") or 0)
                     for name in ("Waiting", "Running", "Finished", "Failed", "Stopped")))


def job_record(item: dict[str, Any]) -> JobRecord:
    return JobRecord(
        id=item["Id"], tenant=str(item.get("Owner") or ""), name=str(item.get("Name") or ""),
        priority=int(item.get("Priority") or 0), state=State(item["State"]),
        message=str(item.get("Message") or ""),
        created=parse_time(item.get("CreationTime")) or _EPOCH,
        started=parse_time(item.get("StartTime")), ended=parse_time(item.get("EndTime")),
        task_metrics=metrics(item.get("TaskMetrics")),
        instance_metrics=metrics(item.get("InstanceMetrics")), description={})


def task_parser(job_id: str) -> Callable[[dict[str, Any]], TaskRecord]:
    def parse(item: dict[str, Any]) -> TaskRecord:
        return TaskRecord(job_id, item["TaskName"], State(item["State"]),
                          parse_time(item.get("StartTime")), parse_time(item.get("EndTime")),
                          metrics(item.get("InstanceMetrics")), pending_reason(item))
    return parse


def pending_reason(item: dict[str, Any]) -> Pending | None:
    """The `PendingReason` of a status object, if it has one the client understands."""
    reason = item.get("PendingReason")
    if not isinstance(reason, dict):
        return None
    text = str(reason.get("Code") or "")
    code: str = Why(text) if text in Why.__members__.values() else text  # a newer server's
    figures = {key: value for key, value in reason.items() if key not in ("Code", "Message")}
    return Pending(code, str(reason.get("Message") or ""), figures)


def instance_parser(job_id: str, task: str) -> Callable[[dict[str, Any]], InstanceRecord]:
    def parse(item: dict[str, Any]) -> InstanceRecord:
        result = item.get("Result") or {}
        started = parse_time(item.get("StartTime"))
        retries = int(item.get("RetryCount") or 0)
        return InstanceRecord(
            job_id=job_id, task=task, instance_id=int(item["InstanceId"]),
            state=State(item["State"]), retry_count=retries,
            attempts=retries + 1 if started else 0, started=started,
            ended=parse_time(item.get("EndTime")), exit_code=result.get("ExitCode"),
            error_code=str(result.get("ErrorCode") or ""),
            error_message=str(result.get("ErrorMessage") or ""),
            detail=str(result.get("Detail") or ""),
            stdout_path=str(item.get("StdoutRedirectPath") or ""),
            stderr_path=str(item.get("StderrRedirectPath") or ""),
            node=str(item.get("NodeIp") or ""), pending=pending_reason(item))
    return parse
