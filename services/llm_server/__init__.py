"""llm_server."""
