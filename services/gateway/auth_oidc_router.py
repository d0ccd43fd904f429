"""Routes: OIDC login (redirect to the provider) and its callback (session cookies, back to /)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from services.gateway.auth_external import provision
from services.gateway.auth_oidc import OidcFlow
from services.gateway.auth_router import set_session_cookies
from services.gateway.deps import ServicesDep
from services.gateway.errors import NotFound, Unauthorized

router = APIRouter(prefix="/api/auth/oidc", tags=["auth"])


def _flow(request: Request) -> OidcFlow:
    flow = getattr(request.app.state, "oidc", None)
    if flow is None:
        raise NotFound("single sign-on (OIDC) is not configured on this server")
    return flow


@router.get("/login", status_code=302, response_class=RedirectResponse)
async def oidc_login(request: Request, services: ServicesDep) -> RedirectResponse:
    """302 to the identity provider (authorization code + PKCE)."""
    return RedirectResponse(await _flow(request).start(), status_code=302)


@router.get("/callback", status_code=302, response_class=RedirectResponse)
async def oidc_callback(
    request: Request,
    services: ServicesDep,
    code: str | None = Query(None, max_length=4096),
    state: str | None = Query(None, max_length=512),
    error: str | None = Query(None, max_length=200),
) -> RedirectResponse:
    """Sets the session and CSRF cookies and sends the browser to the web app."""
    flow = _flow(request)
    if error or not code or not state:
        raise Unauthorized(f"single sign-on did not complete: {error or 'no code'}")
    identity = await flow.finish(code, state)
    try:
        user_id = await run_in_threadpool(provision, services.sessions, identity, services.settings)
    except PermissionError as exc:
        raise Unauthorized("a local account of that name exists; ask an administrator") from exc
    token, _user = await services.auth.session_for(user_id)
    response = RedirectResponse("/", status_code=302)
    set_session_cookies(response, token, services.settings)
    return response
