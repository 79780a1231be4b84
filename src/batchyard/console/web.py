"""What every console page shares: the templates, the security headers, HTML error pages,
and the formatting of times and states.

Pages are Jinja2 templates (autoescaped: everything a tenant typed is text, never markup)
rendered with jinja2-fragments, so an htmx request for one part of a page renders that block
of the same template (`render(..., block="rows")`). Every console response carries a strict
Content-Security-Policy: scripts only from /console/static (htmx, its SSE extension and
console.js), no inline script or style, no frames, forms only to this origin.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from jinja2_fragments.fastapi import Jinja2Blocks
from markupsafe import Markup, escape

from batchyard.console import drawing
from batchyard.domain.states import State
from batchyard.errors import BatchyardError

PREFIX = "/console"
HERE = files("batchyard.console")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
        "object-src 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
"""On every console page and fragment (static files get their own caching)."""


def _environment() -> Environment:
    environment = Environment(loader=FileSystemLoader(str(HERE / "templates")),
                              autoescape=select_autoescape(default=True, default_for_string=True),
                              trim_blocks=True, lstrip_blocks=True)
    environment.filters["moment"] = moment
    environment.filters["state_class"] = state_class
    environment.globals["prefix"] = PREFIX
    environment.globals["bar"] = drawing.progress_bar
    environment.globals["legend"] = drawing.state_legend
    environment.globals["states"] = list(State)
    return environment



def render(request: Request, template: str, context: Mapping[str, Any],
           block: str | None = None, status: int = 200) -> Response:
    """`template` (or only its `block`, for an htmx fragment) with `context`, plus what every
    page gets: the signed-in viewer and the CSRF token (None on the sign-in page)."""
    viewer = getattr(request.state, "viewer", None)
    values = {"viewer": viewer, "csrf": viewer.csrf if viewer is not None else "",
              "path": request.url.path, **context}
    return templates.TemplateResponse(request, template, values, status_code=status,
                                      block_name=block)


def wants_fragment(request: Request) -> bool:
    """An htmx request (it swaps a part of the page, so it gets only that block)."""
    return request.headers.get("hx-request") == "true" and \
        request.headers.get("hx-boosted") != "true"


def moment(value: datetime | float | None) -> Markup:
    """A `<time>` element: UTC text (what a page without JavaScript shows) with the UTC value
    in its title; console.js puts the browser's time zone in its text."""
    if value is None:
        return Markup('<span class="muted">—</span>')
    when = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    iso = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    text = when.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Markup('<time datetime="{0}" title="{1}" data-local>{1}</time>').format(iso, text)


def state_class(state: State | str) -> str:
    """The CSS class of a state (`state-failed`): the same colours everywhere."""
    value = state.value if isinstance(state, State) else str(state)
    return "state-" + value.lower()


def duration(started: datetime | None, ended: datetime | None) -> str:
    """`1 h 02 min`, `3.2 s`: how long from `started` to `ended` (or now)."""
    if started is None:
        return "—"
    end = ended or datetime.now(UTC)
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=UTC)
    seconds = max(0.0, (end - started).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def confirmation(request: Request, question: str, detail: str, page: str, noun: str
                 ) -> Response:
    """The page that asks before deleting `page` (a job's or a cluster's console path): it
    posts to `<page>/delete`; Cancel goes back to `page`. Works without JavaScript."""
    return render(request, "confirm.html", {
        "question": question, "detail": detail, "action": f"{page}/delete",
        "verb": f"Delete the {noun}", "back": page})


def error_page(request: Request, status: int, code: str, message: str) -> Response:
    return render(request, "error.html", {"status": status, "code": code,
                                          "message": message}, status=status)


class SignInNeeded(Exception):
    """No valid session: a page goes to the sign-in form, an htmx request is told to."""


def to_sign_in(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = f"{PREFIX}/sign-in?next={escape_url(target)}"
    if request.headers.get("hx-request") == "true":
        return Response(status_code=204, headers={"HX-Redirect": location})
    if request.method != "GET":
        return error_page(request, 401, "SessionExpired",
                          "your session ended: sign in again, then repeat the action")
    return RedirectResponse(location, status_code=303)


def escape_url(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="/")


class ConsoleRoute(APIRoute):
    """A console route: its responses carry the security headers, and a BatchCompute error
    (NotFound, StateConflict, …) or a missing session becomes an HTML page instead of the
    API's JSON body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            began = time.perf_counter()
            try:
                response = await handler(request)
            except SignInNeeded:
                response = to_sign_in(request)
            except BatchyardError as error:
                response = error_page(request, error.status, error.code, str(error))
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            # The server's own time for the page (reads and rendering; for an event stream,
            # until it starts): what bench/console.py measures.
            response.headers["Server-Timing"] = \
                f"app;dur={(time.perf_counter() - began) * 1000:.2f}"
            return response

        return handle


templates = Jinja2Blocks(env=_environment())

__all__ = ["PREFIX", "ConsoleRoute", "SignInNeeded", "confirmation", "duration", "error_page",
           "escape", "moment", "render", "state_class", "templates", "wants_fragment"]
