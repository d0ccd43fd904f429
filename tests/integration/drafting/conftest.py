"""The drafting API tests run on the gateway tests' app (``stack``: real SQLite, ingest, fake LLM)."""

from tests.integration.services.test_gateway_api import stack  # noqa: F401 (a fixture)
