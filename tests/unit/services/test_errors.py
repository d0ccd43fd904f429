"""Every error, ours or FastAPI's, reaches the client as {"error": {"code", "message"}}."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from services.gateway import errors


class Body(BaseModel):
    k: int


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    errors.install_error_handlers(app)

    @app.get("/raise/{name}")
    def raise_named(name: str):
        raise getattr(errors, name)(f"{name} happened")

    @app.post("/validate")
    def validate(body: Body):
        return {"k": body.k}

    @app.get("/crash")
    def crash():
        raise RuntimeError("secret internals")

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("BadRequest", 400, "bad_request"),
        ("Unauthorized", 401, "unauthorized"),
        ("Forbidden", 403, "forbidden"),
        ("NotFound", 404, "not_found"),
        ("Conflict", 409, "conflict"),
        ("PayloadTooLarge", 413, "payload_too_large"),
        ("UnsupportedMediaType", 415, "unsupported_media_type"),
        ("UpstreamUnavailable", 502, "upstream_unavailable"),
    ],
)
def test_api_errors_map_to_status_and_shape(client, name, status, code):
    response = client.get(f"/raise/{name}")
    assert response.status_code == status
    assert response.json() == {"error": {"code": code, "message": f"{name} happened"}}


def test_unauthorized_asks_for_bearer(client):
    assert client.get("/raise/Unauthorized").headers["www-authenticate"] == "Bearer"


def test_validation_errors_are_422_in_our_shape(client):
    response = client.post("/validate", json={"k": "not a number"})
    assert response.status_code == 422
    body = response.json()["error"]
    assert body["code"] == "validation_error" and "k" in body["message"]


def test_unknown_route_is_404_in_our_shape(client):
    response = client.get("/nope")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_crash_is_500_without_leaking_the_message(client):
    response = client.get("/crash")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "secret internals" not in response.text
