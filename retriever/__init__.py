"""Retrieval: hybrid search with access filtering, prompt composition and citations.

Entry points (the access scope itself lives in ``ingest.stores.acl``, shared with the writers):
``retriever.search.HybridSearcher`` (``from_config``, ``search``), ``retriever.followup.rewrite_query``,
``retriever.prompt.compose_prompt`` (+ ``approx_tokens``, ``PromptTooLong``),
``retriever.citations.ground_answer`` (sentence attribution in ``retriever.attribution``:
citations, or the decline), ``retriever.fusion.reciprocal_rank_fusion``,
``retriever.evaluation`` (the gold-corpus scoring shared by tests and bench/ingest.py) and
``retriever.eval_answers`` (the answer metrics of ``enclave eval``).
"""
