"""The drafting API tests run on the gateway tests' app (``stack``: real SQLite, ingest, fake LLM)."""

from tests.integration.engine.conftest import make_engine, smollm2  # noqa: F401,E402 (fixtures)
from tests.integration.llm_server.test_engine_harmony import checkpoint  # noqa: F401,E402 (fixture)
from tests.integration.services.conftest import postgres_url  # noqa: F401,E402 (fixture)
from tests.integration.services.test_gateway_api import stack  # noqa: F401 (a fixture)
from tests.torch_threads import _one_torch_thread  # noqa: F401,E402 (autouse fixture)
