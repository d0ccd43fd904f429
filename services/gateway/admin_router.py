"""Routes (admins only): groups, users, audit trail."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from services.gateway.deps import ServicesDep, admin_user

router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(admin_user)])


class GroupRequest(BaseModel):
    name: str = Field(min_length=1, max_length=150)


class UserRequest(BaseModel):
    username: str = Field(min_length=1, max_length=150)
    password: str = Field(min_length=1, max_length=1000)
    role: str = "employee"
    groups: list[str] = Field(default_factory=list)


@router.post("/groups", status_code=201)
async def create_group(body: GroupRequest, services: ServicesDep) -> JSONResponse:
    return JSONResponse(
        await run_in_threadpool(services.admin.create_group, body.name), status_code=201
    )


@router.get("/groups")
async def list_groups(services: ServicesDep) -> dict:
    return {"groups": await run_in_threadpool(services.admin.list_groups)}


@router.post("/users", status_code=201)
async def create_user(body: UserRequest, services: ServicesDep) -> JSONResponse:
    created = await run_in_threadpool(
        services.admin.create_user, body.username, body.password, body.role, body.groups
    )
    return JSONResponse(created, status_code=201)


@router.get("/users")
async def list_users(services: ServicesDep) -> dict:
    return {"users": await run_in_threadpool(services.admin.list_users)}


@router.get("/audit")
async def audit(services: ServicesDep, limit: int = Query(100, ge=1, le=1000)) -> dict:
    return {"entries": await run_in_threadpool(services.admin.audit, limit)}
