# One image for every Enclave process (gateway, worker, llm_server, chroma): the process is the command.
# Build: docker compose build   (or: docker build -t enclave .)
# TORCH_INDEX_URL: point at a CPU-only wheel index for CPU-only hosts; leave empty on GPU hosts.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    DO_NOT_TRACK=true \
    SCARF_NO_ANALYTICS=true \
    ANONYMIZED_TELEMETRY=False \
    UNSTRUCTURED_DISABLE_NOTICE=1 \
    TOKENIZERS_PARALLELISM=false \
    ENCLAVE_DATA_DIR=/data \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libmagic1 poppler-utils curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first (better layer caching), then the code.
COPY pyproject.toml README.md ./
COPY scripts ./scripts
RUN python -m venv /opt/venv \
 && if [ -n "$TORCH_INDEX_URL" ]; then /opt/venv/bin/pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"; fi
COPY services ./services
COPY ingest ./ingest
COPY retriever ./retriever
COPY llm ./llm
COPY frontend ./frontend
COPY alembic ./alembic
COPY alembic.ini ./
RUN VENV=/opt/venv EXTRAS= CPU_ONLY=$([ -n "$TORCH_INDEX_URL" ] && echo 1 || echo 0) bash scripts/install.sh

RUN useradd --create-home --uid 10001 enclave && mkdir -p /data && chown enclave /data
USER enclave
VOLUME ["/data"]
EXPOSE 8000 8001
CMD ["enclave", "up"]
