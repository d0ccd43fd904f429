"""A gpt-oss (harmony) model on our engine: the drafter's schema request is served and validated.

The engine constrains harmony's final channel to the plan's JSON schema, so the request
with ``response_format`` is accepted (no fallback ask). With a 16-token budget the tiny
random-weight gpt-oss cannot finish a plan, so the draft must fail closed (nothing
generated, no invented text). The fallback for servers that refuse ``response_format``
(400) is covered with the stub model in tests/unit/drafting.
"""

from __future__ import annotations

import asyncio

import pytest

from drafting.errors import PlanRejected
from drafting.generate import Drafter, TemplateSource, load_template
from ingest.stores.acl import AccessScope
from llm.client import LLMClient, LLMError
from tests.integration.llm_server.live import LiveServer, settings
from tests.unit.drafting.nda import VALID_VALUES, nda_template

pytestmark = [pytest.mark.slow, pytest.mark.integration]


class RecordingClient(LLMClient):
    """The real client, noting each call's response_format and the server's answer status."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[bool, int | None]] = []

    async def chat(self, messages, **kwargs):
        try:
            result = await super().chat(messages, **kwargs)
        except LLMError as exc:
            self.calls.append((bool(kwargs.get("response_format")), exc.status))
            raise
        self.calls.append((bool(kwargs.get("response_format")), 200))
        return result


def test_harmony_model_gets_the_schema_and_a_cut_short_plan_fails_closed(checkpoint):
    from services.llm_server.app import create_app

    app = create_app(
        settings(
            llm_backend="engine",
            llm_model_path=str(checkpoint),
            llm_model="tiny-gpt-oss",
            llm_max_model_len=2048,
            llm_kv_blocks=256,
            llm_cpu_threads=1,
        )
    )
    data = nda_template().encode()
    source = TemplateSource("'NDA' v1", ".md", data, load_template(data, ".md"))
    with LiveServer(app) as live:
        client = RecordingClient(f"{live.url}/v1", "tiny-gpt-oss", timeout=120)
        drafter = Drafter(client, None, plan_tokens=16)
        with pytest.raises(PlanRejected):
            asyncio.run(
                drafter.draft(
                    source, VALID_VALUES, [], "make the term 2 years", AccessScope.everything()
                )
            )
    assert client.calls == [(True, 200)]
