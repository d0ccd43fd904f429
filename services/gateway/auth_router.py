"""Routes: log in / out (ending the session server-side), change one's password, who am I."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from services.gateway.auth_service import CurrentUser, csrf_token_for
from services.gateway.deps import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    ServicesDep,
    UserDep,
    client_address,
    request_token,
)
from services.gateway.errors import BadRequest
from services.gateway.security import password_problem
from services.settings import Settings

router = APIRouter(prefix="/api", tags=["auth"])


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1, max_length=1000)


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1000)
    new_password: str = Field(min_length=1, max_length=1000)


class UserOut(BaseModel):
    id: str
    username: str
    role: str
    groups: list[str]


class LoginOut(BaseModel):
    token: str
    csrf_token: str = Field(
        description="Send as X-CSRF-Token on writes made with the session cookie (also in the enclave_csrf cookie)."
    )
    user: UserOut


class OkOut(BaseModel):
    ok: bool


def set_session_cookies(response: Response, token: str, settings: Settings) -> str:
    """The HttpOnly session cookie and the readable CSRF cookie; returns the CSRF token."""
    max_age = settings.session_ttl_hours * 3600
    csrf = csrf_token_for(token)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
        max_age=max_age,
    )
    response.set_cookie(
        CSRF_COOKIE, csrf, samesite="strict", secure=settings.cookie_secure, max_age=max_age
    )
    return csrf


def user_json(user: CurrentUser) -> dict:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "groups": list(user.groups),
    }


@router.post("/auth/login", response_model=LoginOut)
async def login(
    body: LoginRequest, request: Request, response: Response, services: ServicesDep
) -> dict:
    """A session: the token (for Bearer clients), an HttpOnly session cookie and a CSRF cookie.

    Wrong passwords are counted per username and per address; past the limit the login
    answers 429 with Retry-After, the right password included.
    """
    token, user = await services.auth.login(body.username, body.password, client_address(request))
    csrf = set_session_cookies(response, token, services.settings)
    return {"token": token, "csrf_token": csrf, "user": user_json(user)}


@router.post("/auth/logout", response_model=OkOut)
async def logout(
    request: Request, response: Response, _user: UserDep, services: ServicesDep
) -> dict:
    """End this session on the server (the token stops working at once) and drop the cookies."""
    await services.auth.logout(request_token(request) or "")
    response.delete_cookie(SESSION_COOKIE)
    response.delete_cookie(CSRF_COOKIE)
    return {"ok": True}


@router.post("/auth/password", response_model=OkOut)
async def change_password(
    body: PasswordChange, response: Response, user: UserDep, services: ServicesDep
) -> dict:
    """Change one's own password; every session of the account ends (log in again)."""
    problem = password_problem(body.new_password)
    if problem:
        raise BadRequest(problem)
    await services.auth.change_password(user, body.current_password, body.new_password)
    response.delete_cookie(SESSION_COOKIE)
    response.delete_cookie(CSRF_COOKIE)
    return {"ok": True}


@router.get("/me", response_model=UserOut)
async def me(user: UserDep) -> dict:
    return user_json(user)
