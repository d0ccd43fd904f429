"""Routes: log in / out, who am I."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from services.gateway.auth_service import CurrentUser
from services.gateway.deps import SESSION_COOKIE, ServicesDep, UserDep, request_token

router = APIRouter(prefix="/api", tags=["auth"])


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1, max_length=1000)


def user_json(user: CurrentUser) -> dict:
    return {
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "groups": list(user.groups),
    }


@router.post("/auth/login")
async def login(body: LoginRequest, response: Response, services: ServicesDep) -> dict:
    token, user = await run_in_threadpool(services.auth.login, body.username, body.password)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        max_age=services.settings.session_ttl_hours * 3600,
    )
    return {"token": token, "user": user_json(user)}


@router.post("/auth/logout")
async def logout(
    request: Request, response: Response, _user: UserDep, services: ServicesDep
) -> dict:
    await run_in_threadpool(services.auth.logout, request_token(request))
    response.delete_cookie(SESSION_COOKIE)
    return {"ok": True}


@router.get("/me")
async def me(user: UserDep) -> dict:
    return user_json(user)
