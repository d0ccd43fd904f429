#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from the sources llama-cpp-python vendors (the version
# pinned by the `bench` extra), so bench/engine.py can compare against a llama.cpp server
# with parallel slots and continuous batching. Release, native ISA, server target only.
# The build is cached: LLAMA_BENCH_DIR (default ~/.cache/enclave-bench) holds the sdist,
# the extracted sources and build/bin/llama-server; a second run only prints the path.
# Needs cmake and a C++ compiler; needs the package index once (pip download of the sdist).
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
ROOT="${LLAMA_BENCH_DIR:-$HOME/.cache/enclave-bench}"
PY="${PYTHON:-python3}"
SRC="$ROOT/llama_cpp_python-$VERSION/vendor/llama.cpp"
BUILD="$ROOT/llama.cpp-$VERSION-build"
BIN="$BUILD/bin/llama-server"

if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi
command -v cmake >/dev/null || { echo "cmake not found: cannot build llama-server" >&2; exit 2; }
mkdir -p "$ROOT"
SDIST="$ROOT/llama_cpp_python-$VERSION.tar.gz"
if [[ ! -f "$SDIST" ]]; then
  "$PY" -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$ROOT" >&2
fi
[[ -d "$SRC" ]] || tar -xzf "$SDIST" -C "$ROOT"
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
cmake -S "$SRC" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF -DCMAKE_RUNTIME_OUTPUT_DIRECTORY="$BUILD/bin" >&2
cmake --build "$BUILD" --target llama-server -j "$(nproc)" >&2
echo "$BIN"
