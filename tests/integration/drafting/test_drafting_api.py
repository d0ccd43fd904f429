"""/api/templates and /api/drafts through the real gateway (real SQLite, real ingest, loopback fake LLM).

The app, its users (admin; hannah in hr; eve in no group) and the fake LLM come from the
gateway API tests' ``stack`` fixture; the fake answers a draft plan by adding the first
library clause the schema offers (``fake_llm.fake_plan``), so what a user is offered is
exactly what the access filter let through.
"""

from __future__ import annotations

import io

import pytest
from docx import Document

from tests.integration.services.test_gateway_api import _create, finished_job, login, upload
from tests.unit.drafting.nda import VALID_VALUES, nda_template

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONTRACT = b"""# Contractor Agreement

Services. The Contractor provides the services described in each statement of work.

Non-Solicitation. During the Term and for 18 months thereafter, Contractor will not solicit any employee of Client to leave Client's employ.

Payment. Client pays each invoice within 30 days of receipt.
"""
ASK = "add a non-solicitation clause, 12 months"


def upload_template(stack, content: bytes, filename: str = "nda.md", headers=None, **fields):
    return stack.client.post(
        "/api/templates",
        files={"file": (filename, content)},
        data=fields,
        headers=headers or stack.admin,
    )


@pytest.fixture(scope="module")
def nda(stack) -> dict:
    response = upload_template(stack, nda_template().encode(), name="Mutual NDA")
    assert response.status_code == 201, response.text
    return response.json()


def draft(stack, headers, **body):
    return stack.client.post("/api/drafts", json=body, headers=headers)


def plan_requests(stack) -> list[dict]:
    return [
        r
        for r in stack.llm.requests
        if (r.get("response_format") or {}).get("json_schema", {}).get("name") == "draft_plan"
    ]


def test_template_upload_derives_the_field_schema_and_versions_by_name(stack, nda):
    assert nda["name"] == "Mutual NDA" and nda["version"] == 1
    fields = {f["name"]: f for f in nda["fields"]}
    assert fields["effective_date"]["type"] == "date"
    assert fields["governing_law"]["choices"] == ["Delaware", "New York"]
    assert fields["non_solicit_months"]["required"] is False
    again = upload_template(stack, nda_template().encode(), name="Mutual NDA")
    assert again.status_code == 201 and again.json()["version"] == 2
    shown = stack.client.get(f"/api/templates/{nda['template_id']}", headers=stack.admin).json()
    assert shown["fields"] == nda["fields"]
    assert {"name": "non_solicit", "title": "Non-Solicitation", "optional": True} in shown[
        "clauses"
    ]
    listed = stack.client.get("/api/templates", headers=stack.admin).json()["templates"]
    versions = sorted(t["version"] for t in listed if t["name"] == "Mutual NDA")
    assert versions == [1, 2]


def test_template_upload_errors(stack):
    eve = login(stack.client, "eve", "eve-pass-1")
    assert upload_template(stack, b"# T\n{{a}}", headers=eve).status_code == 403
    assert upload_template(stack, b"plain", filename="t.txt").status_code == 415
    broken = upload_template(
        stack, b"# T\n{{a: date}} {{a: int}} {{b: colour}} {{c\n{% clause x %}"
    )
    assert broken.status_code == 422
    error = broken.json()["error"]
    assert error["code"] == "invalid_template"
    assert {p["field"] for p in error["problems"]} >= {"a", "b", "template", "x"}
    not_docx = upload_template(stack, b"not a zip", filename="t.docx")
    assert not_docx.status_code == 422 and not_docx.json()["error"]["problems"]


def test_invalid_draft_input_gets_one_422_listing_every_problem_and_generates_nothing(stack, nda):
    before = len(stack.client.get("/api/drafts", headers=stack.admin).json()["drafts"])
    plans_before = len(plan_requests(stack))
    response = draft(
        stack,
        stack.admin,
        template_id=nda["template_id"],
        fields={"effective_date": "yesterday", "governing_law": "Texas", "extra": "x"},
        include=["non_solicit"],
        instructions=ASK,
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_fields"
    assert {p["field"] for p in error["problems"]} == {
        "effective_date",
        "governing_law",
        "extra",
        "jurisdiction",
        "party_a",
        "party_b",
        "non_solicit_months",
    }
    assert len(stack.client.get("/api/drafts", headers=stack.admin).json()["drafts"]) == before
    assert len(plan_requests(stack)) == plans_before
    missing = draft(stack, stack.admin, template_id="no-such-id", fields={})
    assert missing.status_code == 404


def test_a_draft_is_stored_listed_downloadable_and_private_to_its_author(stack, nda):
    hannah = login(stack.client, "hannah", "hannah-pass")
    response = draft(
        stack,
        hannah,
        template_id=nda["template_id"],
        fields=VALID_VALUES | {"non_solicit_months": 6},
        include=["non_solicit"],
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["template_version"] == 1 and body["username"] == "hannah"
    clauses = {c["name"]: c for c in body["report"]["clauses"]}
    assert clauses["non_solicit"]["changed"] and "Mutual NDA" in clauses["non_solicit"]["source"]
    assert not clauses["introduction"]["changed"] and clauses["introduction"]["diff"] == ""
    listed = stack.client.get("/api/drafts", headers=hannah).json()["drafts"]
    assert body["draft_id"] in [d["draft_id"] for d in listed]
    shown = stack.client.get(f"/api/drafts/{body['draft_id']}", headers=hannah).json()
    assert shown["report"] == body["report"]
    docx = stack.client.get(f"/api/drafts/{body['draft_id']}.docx", headers=hannah)
    assert docx.status_code == 200
    text = "\n".join(p.text for p in Document(io.BytesIO(docx.content)).paragraphs)
    assert "For 6 months after the Effective Date" in text
    eve = login(stack.client, "eve", "eve-pass-1")
    assert stack.client.get(f"/api/drafts/{body['draft_id']}", headers=eve).status_code == 404
    assert stack.client.get(f"/api/drafts/{body['draft_id']}.docx", headers=eve).status_code == 404


def test_library_clauses_reach_only_users_who_may_read_their_contract(stack, nda):
    _create(stack.client, stack.admin, "/api/admin/groups", {"name": "legal"})
    _create(
        stack.client,
        stack.admin,
        "/api/admin/users",
        {"username": "lara", "password": "lara-pass-1", "role": "employee", "groups": ["legal"]},
    )
    status, body = upload(stack, "contractor.md", CONTRACT, groups="legal")
    assert status == 202, body
    assert finished_job(stack, body["job_id"])["state"] == "done"

    hannah = login(stack.client, "hannah", "hannah-pass")
    request = {"template_id": nda["template_id"], "fields": VALID_VALUES, "instructions": ASK}
    outsider = draft(stack, hannah, **request)
    assert outsider.status_code == 201, outsider.text
    offered = plan_requests(stack)[-1]
    assert "solicit any employee" not in str(offered["messages"])
    assert not any(c["source"].startswith("document") for c in outsider.json()["report"]["clauses"])

    lara = login(stack.client, "lara", "lara-pass-1")
    insider = draft(stack, lara, **request)
    assert insider.status_code == 201, insider.text
    added = [c for c in insider.json()["report"]["clauses"] if c["source"].startswith("document")]
    assert len(added) == 1 and "Non-Solicitation" in added[0]["source"]
    assert "'contractor'" in added[0]["source"]  # the document's title (its file name)
    assert "[-18-]{+12+}" in added[0]["diff"]
    docx = stack.client.get(f"/api/drafts/{insider.json()['draft_id']}.docx", headers=lara)
    text = "\n".join(p.text for p in Document(io.BytesIO(docx.content)).paragraphs)
    assert "for 12 months thereafter, Contractor will not solicit" in text


def test_openapi_describes_the_drafting_endpoints(stack):
    paths = stack.client.get("/openapi.json").json()["paths"]
    assert "201" in paths["/api/drafts"]["post"]["responses"]
    schema = paths["/api/templates/{template_id}"]["get"]["responses"]["200"]["content"]
    assert "TemplateOut" in str(schema)


def test_a_docx_template_drafts_to_a_docx_with_its_styles(stack):
    from tests.unit.drafting.nda import nda_docx_template

    uploaded = upload_template(stack, nda_docx_template(), filename="nda.docx", name="NDA docx")
    assert uploaded.status_code == 201, uploaded.text
    template_id = uploaded.json()["template_id"]
    assert stack.client.get("/api/templates/nope", headers=stack.admin).status_code == 404
    response = draft(stack, stack.admin, template_id=template_id, fields=VALID_VALUES)
    assert response.status_code == 201, response.text
    docx = stack.client.get(f"/api/drafts/{response.json()['draft_id']}.docx", headers=stack.admin)
    paragraphs = Document(io.BytesIO(docx.content)).paragraphs
    assert sum(p.style.name == "List Number" for p in paragraphs) == 11
    assert any(p.text == "March 1, 2026" for p in paragraphs)


def test_a_malformed_draft_request_lists_every_problem(stack):
    response = stack.client.post(
        "/api/drafts", json={"fields": ["not", "a", "map"]}, headers=stack.admin
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert {p["field"] for p in error["problems"]} == {"template_id", "fields"}
