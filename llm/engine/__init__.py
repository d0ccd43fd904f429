"""Our inference engine: scheduler, paged KV block manager, model runner, sampler, async front.

Import the pieces from their modules (``llm.engine.async_engine.AsyncEngine``,
``llm.engine.llm_engine.LLMEngine``, ...); this package imports nothing at import time.
"""
