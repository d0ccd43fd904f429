"""Routes (admins only): groups and users with their lifecycle. The audit trail is audit_router."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from services.gateway.deps import AdminDep, ServicesDep, admin_user
from services.gateway.errors import BadRequest
from services.gateway.security import password_problem

router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(admin_user)])

GROUP_NAME_RULE = "1-100 printable characters, no comma"


class GroupRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100, description=GROUP_NAME_RULE)


class GroupOut(BaseModel):
    id: str
    name: str


class GroupsOut(BaseModel):
    groups: list[GroupOut]


class UserRequest(BaseModel):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1, max_length=1000)
    role: str = Field("employee", description="admin | editor | employee")
    groups: list[str] = Field(default_factory=list)


class UserUpdate(BaseModel):
    """Fields left out stay as they are; any change ends the user's sessions."""

    role: str | None = Field(None, description="admin | editor | employee")
    groups: list[str] | None = Field(None, description="the complete new list of groups")
    disabled: bool | None = None


class PasswordReset(BaseModel):
    password: str = Field(min_length=1, max_length=1000)


class AdminUserOut(BaseModel):
    id: str
    username: str
    role: str
    groups: list[str]
    disabled: bool


class UsersOut(BaseModel):
    users: list[AdminUserOut]


class DeletedOut(BaseModel):
    deleted: bool


class RevokedOut(BaseModel):
    username: str
    revoked: int


UsernamePath = Path(min_length=1, max_length=150)


async def _password_hash(services: ServicesDep, password: str) -> str:
    problem = password_problem(password)
    if problem:
        raise BadRequest(problem)
    return await services.auth.hasher.hash(password)


@router.post("/groups", status_code=201, response_model=GroupOut)
async def create_group(body: GroupRequest, services: ServicesDep) -> JSONResponse:
    return JSONResponse(
        await run_in_threadpool(services.admin.create_group, body.name), status_code=201
    )


@router.get("/groups", response_model=GroupsOut)
async def list_groups(services: ServicesDep) -> dict:
    return {"groups": await run_in_threadpool(services.admin.list_groups)}


@router.delete("/groups/{name}", response_model=DeletedOut)
async def delete_group(
    services: ServicesDep, name: str = Path(min_length=1, max_length=150)
) -> dict:
    """Members' sessions end; documents shared only with this group become admin-only."""
    return await run_in_threadpool(services.admin.delete_group, name)


@router.post("/users", status_code=201, response_model=AdminUserOut)
async def create_user(body: UserRequest, services: ServicesDep) -> JSONResponse:
    password_hash = await _password_hash(services, body.password)
    created = await run_in_threadpool(
        services.admin.create_user, body.username, password_hash, body.role, body.groups
    )
    return JSONResponse(created, status_code=201)


@router.get("/users", response_model=UsersOut)
async def list_users(services: ServicesDep) -> dict:
    return {"users": await run_in_threadpool(services.admin.list_users)}


@router.patch("/users/{username}", response_model=AdminUserOut)
async def update_user(
    body: UserUpdate, admin: AdminDep, services: ServicesDep, username: str = UsernamePath
) -> dict:
    """Change role, groups or disabled; the user's sessions end."""
    return await run_in_threadpool(
        lambda: services.admin.update_user(
            username,
            actor=admin.username,
            role=body.role,
            groups=body.groups,
            disabled=body.disabled,
        )
    )


@router.post("/users/{username}/password", response_model=AdminUserOut)
async def reset_password(
    body: PasswordReset, services: ServicesDep, username: str = UsernamePath
) -> dict:
    """Set a new password; the user's sessions end."""
    password_hash = await _password_hash(services, body.password)
    return await run_in_threadpool(services.admin.set_password, username, password_hash)


@router.post("/users/{username}/revoke-sessions", response_model=RevokedOut)
async def revoke_sessions(services: ServicesDep, username: str = UsernamePath) -> dict:
    return await run_in_threadpool(services.admin.revoke_sessions, username)


@router.delete("/users/{username}", response_model=DeletedOut)
async def delete_user(admin: AdminDep, services: ServicesDep, username: str = UsernamePath) -> dict:
    return await run_in_threadpool(services.admin.delete_user, username, admin.username)
