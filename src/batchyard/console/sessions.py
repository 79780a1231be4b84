"""Signing in to the console: access key id and secret in, a signed session cookie out.

The keys are the API's (`batchyard keys create`); a session acts for the key's tenant and
sees only what the API would show that key. The cookie:

- holds the key id, the tenant, a session id and the CSRF token, signed (itsdangerous,
  HMAC-SHA256) with a key derived from the installation's master key — it is readable by its
  holder but cannot be forged or changed; it expires after `SESSION_SECONDS` (the signature
  carries the time), and a revoked access key ends its sessions at the next request;
- is `HttpOnly` (no script reads it), `SameSite=Lax` (no cross-site form posts carry it),
  `Path=/console`, and `Secure` when the console is served over HTTPS;
- is forgotten on sign-out; the session id is also remembered as ended until its expiry, so
  a copy of the cookie taken before sign-out stops working (in this process: a restart
  forgets the list, and then only the expiry ends the copy).

Every state-changing request (POST) must carry the session's CSRF token, as the form field
`csrf` or the `X-CSRF-Token` header (htmx sends it), and, when the browser sends an `Origin`,
come from this origin. The sign-in form has its own token in a short-lived cookie, so a
foreign page cannot sign a visitor in to the attacker's account either.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from itsdangerous import BadSignature, URLSafeTimedSerializer

from batchyard.adapters.credentials import MASTER_KEY_FILE, master_key
from batchyard.api.services import Services, services_of
from batchyard.console.web import PREFIX, ConsoleRoute, SignInNeeded, error_page, render
from batchyard.errors import BatchyardError

SESSION_COOKIE = "batchyard_console"
SIGN_IN_COOKIE = "batchyard_sign_in"
SESSION_SECONDS = 12 * 3600
SIGN_IN_SECONDS = 3600
FAILED_SIGN_IN_DELAY = 0.5
"""Seconds a wrong key id or secret waits before its answer (slows guessing)."""

router = APIRouter(route_class=ConsoleRoute)


@dataclass(frozen=True)
class Viewer:
    """Who is signed in: the tenant whose jobs the console shows, the key, the CSRF token."""

    tenant: str
    key_id: str
    session: str
    csrf: str


class Sessions:
    """Issues and checks session cookies (see the module docstring)."""

    def __init__(self, secret: bytes) -> None:
        self._sessions = URLSafeTimedSerializer(secret, salt="console-session")
        self._sign_in = URLSafeTimedSerializer(secret, salt="console-sign-in")
        self._ended: dict[str, float] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, data_dir: Path) -> Sessions:
        """Sessions signed with a key derived from the data dir's master key, so they survive
        a restart of the server and hold for every server of the installation."""
        master_key(data_dir)  # created on first use
        material = (data_dir / MASTER_KEY_FILE).read_bytes().strip()
        return cls(hmac.new(material, b"batchyard console sessions", hashlib.sha256).digest())

    def issue(self, tenant: str, key_id: str) -> tuple[Viewer, str]:
        viewer = Viewer(tenant, key_id, secrets.token_urlsafe(16), secrets.token_urlsafe(24))
        cookie = self._sessions.dumps({"t": tenant, "k": key_id, "s": viewer.session,
                                       "c": viewer.csrf})
        return viewer, cookie

    def read(self, cookie: str) -> Viewer | None:
        try:
            data: Any = self._sessions.loads(cookie, max_age=SESSION_SECONDS)
        except BadSignature:
            return None
        if not isinstance(data, dict) or self._has_ended(str(data.get("s"))):
            return None
        return Viewer(str(data["t"]), str(data["k"]), str(data["s"]), str(data["c"]))

    def end(self, viewer: Viewer) -> None:
        with self._lock:
            now = time.time()
            self._ended = {session: until for session, until in self._ended.items()
                           if until > now}
            self._ended[viewer.session] = now + SESSION_SECONDS

    def _has_ended(self, session: str) -> bool:
        with self._lock:
            return session in self._ended

    def sign_in_token(self) -> tuple[str, str]:
        """A token for the sign-in form and the cookie that vouches for it."""
        token = secrets.token_urlsafe(24)
        return token, self._sign_in.dumps(token)

    def sign_in_token_holds(self, cookie: str, token: str) -> bool:
        try:
            expected = self._sign_in.loads(cookie, max_age=SIGN_IN_SECONDS)
        except BadSignature:
            return False
        return isinstance(expected, str) and hmac.compare_digest(expected, token)


def sessions_of(request: Request) -> Sessions:
    state = request.app.state
    found: Sessions | None = getattr(state, "console_sessions", None)
    if found is None:
        found = state.console_sessions = Sessions.of(services_of(request).settings.data_dir
                                                     .resolve())
    return found


def current_viewer(request: Request) -> Viewer:
    """The signed-in viewer of a request, whose key is still active; SignInNeeded if none.
    A POST must also carry the session's CSRF token and come from this origin."""
    viewer = sessions_of(request).read(request.cookies.get(SESSION_COOKIE, ""))
    if viewer is None:
        raise SignInNeeded()
    key = services_of(request).keys.lookup(viewer.key_id)
    if key is None or not key.active or key.tenant != viewer.tenant:
        raise SignInNeeded()
    request.state.viewer = viewer
    request.state.caller = viewer  # the request log names the tenant and key
    return viewer


async def form_viewer(request: Request) -> Viewer:
    """`current_viewer` for a state-changing request: checks the CSRF token and origin."""
    viewer = current_viewer(request)
    sent = request.headers.get("x-csrf-token", "")
    if not sent:
        form = await request.form()
        value = form.get("csrf", "")
        sent = value if isinstance(value, str) else ""
    if not sent or not hmac.compare_digest(sent, viewer.csrf) or not same_origin(request):
        raise CsrfRefused()
    return viewer


class CsrfRefused(BatchyardError):
    """A POST without the session's CSRF token, or from another origin (403)."""

    code = "CsrfRefused"
    status = 403

    def __init__(self) -> None:
        super().__init__("this form is not from a page of this console (its CSRF token is "
                         "missing or wrong, or it came from another site): reload the page and "
                         "try again")


def same_origin(request: Request) -> bool:
    """No `Origin` header (an old browser, a non-browser client), or this server's own."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in {f"http://{host}", f"https://{host}"}


ViewerDependency = Annotated[Viewer, Depends(current_viewer)]
FormViewer = Annotated[Viewer, Depends(form_viewer)]


def _set_cookie(request: Request, response: Response, name: str, value: str,
                max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path=PREFIX, httponly=True,
                        samesite="lax", secure=request.url.scheme == "https")


@router.get("/sign-in", response_class=HTMLResponse)
def sign_in_form(request: Request, next: str = "") -> Response:
    token, cookie = sessions_of(request).sign_in_token()
    response = render(request, "sign_in.html", {"sign_in_token": token,
                                                "next": safe_next(next), "problem": ""})
    _set_cookie(request, response, SIGN_IN_COOKIE, cookie, SIGN_IN_SECONDS)
    return response


@router.post("/sign-in", response_class=HTMLResponse)
def sign_in(request: Request, key_id: Annotated[str, Form(max_length=200)] = "",
            secret: Annotated[str, Form(max_length=500)] = "",
            token: Annotated[str, Form(max_length=200)] = "",
            next: Annotated[str, Form(max_length=2000)] = "") -> Response:
    sessions = sessions_of(request)
    if not sessions.sign_in_token_holds(request.cookies.get(SIGN_IN_COOKIE, ""), token) \
            or not same_origin(request):
        return error_page(request, 403, "CsrfRefused", "the sign-in form expired or came "
                          "from another site: open the sign-in page again")
    services = services_of(request)
    tenant = _check_key(services, key_id.strip(), secret.strip())
    if tenant is None:
        time.sleep(FAILED_SIGN_IN_DELAY)
        token, cookie = sessions.sign_in_token()
        refused = render(request, "sign_in.html", {
            "sign_in_token": token, "next": safe_next(next), "key_id": key_id,
            "problem": "That access key id and secret do not match an active key."},
            status=403)
        _set_cookie(request, refused, SIGN_IN_COOKIE, cookie, SIGN_IN_SECONDS)
        return refused
    _viewer, cookie = sessions.issue(tenant, key_id.strip())
    response = RedirectResponse(safe_next(next) or f"{PREFIX}/jobs", status_code=303)
    _set_cookie(request, response, SESSION_COOKIE, cookie, SESSION_SECONDS)
    response.delete_cookie(SIGN_IN_COOKIE, path=PREFIX)
    return response


def _check_key(services: Services, key_id: str, secret: str) -> str | None:
    """The tenant of the active key `key_id` whose secret is `secret`, else None."""
    key = services.keys.lookup(key_id) if key_id else None
    if key is None or not key.active:
        hmac.compare_digest(secret, secret)  # about the same time as a comparison
        return None
    return key.tenant if hmac.compare_digest(key.secret.encode(), secret.encode()) else None


@router.post("/sign-out")
def sign_out(request: Request, viewer: FormViewer) -> Response:
    sessions_of(request).end(viewer)
    response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


def safe_next(target: str) -> str:
    """Where to go after signing in: only a console path (never another site)."""
    if target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target \
            and "://" not in target and not target.startswith(PREFIX + "/sign-"):
        return target
    return ""
