"""The portal's endpoints: a document's original file, conversation rename/delete/export, feedback.

Same real stack as test_gateway_api.py (its ``stack`` fixture, a module of its own here):
real SQLite, real ingest, the loopback LLM stand-in.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.services import test_gateway_api as gateway
from tests.integration.services.test_gateway_api import corpus_file, login, upload

# The gateway tests' fixtures, instantiated again for this module (module scope).
stack, transit, promotions_hr = gateway.stack, gateway.transit, gateway.promotions_hr

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def people(stack) -> dict:
    return {
        "hannah": login(stack.client, "hannah", "hannah-pass"),  # in hr
        "eve": login(stack.client, "eve", "eve-pass-1"),  # in no group
    }


@pytest.fixture(scope="module")
def answer(stack, transit) -> dict:
    response = stack.client.post(
        "/api/chat", json={"message": "Who is eligible for transit subsidies?"}, headers=stack.admin
    )
    assert response.status_code == 200, response.text
    return response.json()


# --- GET /api/documents/{id}/file ----------------------------------------------------------


def test_original_file_is_served_to_readers_as_a_sandboxed_download(stack, promotions_hr, people):
    path = f"/api/documents/{promotions_hr['document_id']}/file"
    response = stack.client.get(path, headers=people["hannah"])
    assert response.status_code == 200, response.text
    assert response.content == corpus_file("hiring/promotions.md")
    assert response.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_original_file_is_404_to_non_readers_and_strangers(stack, promotions_hr, people):
    path = f"/api/documents/{promotions_hr['document_id']}/file"
    denied = stack.client.get(path, headers=people["eve"])
    missing = stack.client.get("/api/documents/no-such-id/file", headers=people["eve"])
    assert denied.status_code == missing.status_code == 404
    assert denied.json()["error"]["code"] == "not_found"
    assert "promotions" not in denied.text
    assert stack.client.get(path).status_code == 401


def test_pdf_is_served_inline_for_the_viewer(stack, people):
    status, body = upload(stack, "benefits.pdf", corpus_file("onboarding/benefits.pdf"))
    assert status == 202, body
    response = stack.client.get(f"/api/documents/{body['document_id']}/file", headers=people["eve"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"].startswith("inline")
    assert response.content[:5] == b"%PDF-"


# --- conversations: rename, export, delete ---------------------------------------------------


def test_rename_then_export_markdown_with_sources(stack, answer):
    path = f"/api/conversations/{answer['conversation_id']}"
    renamed = stack.client.patch(path, json={"title": "  Transit   rules "}, headers=stack.admin)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["title"] == "Transit rules"
    assert stack.client.get(path, headers=stack.admin).json()["title"] == "Transit rules"

    exported = stack.client.get(f"{path}/export", headers=stack.admin)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/markdown")
    assert 'filename="transit-rules.md"' in exported.headers["content-disposition"]
    text = exported.text
    assert text.startswith("# Transit rules\n")
    assert "Who is eligible for transit subsidies?" in text and answer["answer"] in text
    first = answer["citations"][0]
    assert f"1. {first['title']}" in text


def test_rename_rejects_blank_titles_and_other_users(stack, answer, people):
    path = f"/api/conversations/{answer['conversation_id']}"
    blank = stack.client.patch(path, json={"title": "   "}, headers=stack.admin)
    assert blank.status_code == 400 and "title" in blank.json()["error"]["message"]
    assert stack.client.patch(path, json={"title": ""}, headers=stack.admin).status_code == 422
    foreign = stack.client.patch(path, json={"title": "mine now"}, headers=people["eve"])
    assert foreign.status_code == 404
    assert stack.client.get(f"{path}/export", headers=people["eve"]).status_code == 404
    assert stack.client.delete(path, headers=people["eve"]).status_code == 404


def test_delete_removes_the_conversation_and_its_feedback(stack, transit, people):
    asked = stack.client.post(
        "/api/chat", json={"message": "transit subsidy amount"}, headers=people["eve"]
    ).json()
    rated = stack.client.post(
        "/api/feedback",
        json={"message_id": asked["message_id"], "rating": "up"},
        headers=people["eve"],
    )
    assert rated.status_code == 200, rated.text
    path = f"/api/conversations/{asked['conversation_id']}"
    deleted = stack.client.delete(path, headers=people["eve"])
    assert deleted.status_code == 200 and deleted.json() == {
        "id": asked["conversation_id"],
        "deleted": True,
    }
    assert stack.client.get(path, headers=people["eve"]).status_code == 404
    listed = stack.client.get("/api/conversations", headers=people["eve"]).json()
    assert asked["conversation_id"] not in {c["id"] for c in listed["conversations"]}
    export = stack.client.get("/api/admin/feedback/export", headers=stack.admin).text
    assert asked["message_id"] not in export


# --- feedback --------------------------------------------------------------------------------


def test_feedback_is_stored_replaced_and_exported_for_admins(stack, answer, people):
    def rate(rating: str, comment: str | None = None):
        return stack.client.post(
            "/api/feedback",
            json={"message_id": answer["message_id"], "rating": rating, "comment": comment},
            headers=stack.admin,
        )

    assert rate("down", "missing the amount").json()["rating"] == "down"
    second = rate("up", "  good  ")
    assert second.status_code == 200 and second.json()["comment"] == "good"

    export = stack.client.get("/api/admin/feedback/export", headers=stack.admin)
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in export.text.splitlines()]
    mine = [r for r in rows if r["message_id"] == answer["message_id"]]
    assert len(mine) == 1  # the second vote replaced the first
    assert mine[0]["rating"] == "up" and mine[0]["comment"] == "good"
    assert mine[0]["question"] == "Who is eligible for transit subsidies?"
    assert mine[0]["answer"] == answer["answer"]
    assert mine[0]["citations"] == answer["citations"]
    assert mine[0]["username"] == "admin"

    assert stack.client.get("/api/admin/feedback/export", headers=people["eve"]).status_code == 403


def test_feedback_on_someone_elses_or_unknown_answer_is_404_and_bad_rating_422(
    stack, answer, people
):
    foreign = stack.client.post(
        "/api/feedback",
        json={"message_id": answer["message_id"], "rating": "up"},
        headers=people["eve"],
    )
    assert foreign.status_code == 404
    unknown = stack.client.post(
        "/api/feedback", json={"message_id": "nope", "rating": "up"}, headers=stack.admin
    )
    assert unknown.status_code == 404
    bad = stack.client.post(
        "/api/feedback",
        json={"message_id": answer["message_id"], "rating": "meh"},
        headers=stack.admin,
    )
    assert bad.status_code == 422 and "rating" in bad.json()["error"]["message"]


def test_openapi_describes_the_new_endpoints(stack):
    paths = stack.client.get("/openapi.json").json()["paths"]
    assert {
        "/api/documents/{document_id}/file",
        "/api/conversations/{conversation_id}/export",
        "/api/feedback",
        "/api/admin/feedback/export",
    } <= set(paths)
    rename = paths["/api/conversations/{conversation_id}"]["patch"]
    assert "ConversationSummary" in json.dumps(rename["responses"]["200"])
