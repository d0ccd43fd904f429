#!/usr/bin/env bash
# Build the web app (frontend/ -> frontend/dist) when its sources changed since the last build.
# Node present: `npm ci` from the committed lock file (only when the lock changed), then
# typecheck + `vite build`. Node absent, or the registry unreachable: keep serving the
# committed frontend/dist, which is why dist is in git (the Docker image has no Node either).
set -euo pipefail
cd "$(dirname "$0")/../frontend"

if ! command -v npm >/dev/null 2>&1; then
  echo "frontend: Node/npm not found; serving the committed frontend/dist" >&2
  exit 0
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  if ! npm ci --no-audit --no-fund --loglevel=error; then
    echo "frontend: npm ci failed (offline?); serving the committed frontend/dist" >&2
    exit 0
  fi
fi
if [ "${1:-}" = "--deps-only" ]; then exit 0; fi
npm run --silent build
