#!/usr/bin/env bash
# Builds the dashboard (trunk, release) into dist/ and the Worker (worker-build, release) into
# functions/build/. Incremental: a second run with no changes takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export PATH="$HOME/.cargo/bin:$root/node_modules/.bin:$PATH"
# Tools the build would otherwise try to download (the machines are offline).
export WASM_BINDGEN_BIN="$HOME/.cargo/bin/wasm-bindgen"
export WASM_OPT_BIN="$root/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$root/node_modules/.bin/esbuild"

echo "[build] dashboard (trunk --release)"
trunk build --config Trunkfile.toml --release --offline 2>&1 | grep -vE '^\s*$' | grep -vE 'INFO|applying new distribution' || true
test -f dist/index.html || { echo "[build] trunk produced no dist/index.html" >&2; exit 1; }

echo "[build] worker (worker-build --release)"
(cd functions && worker-build --release 2>&1 | grep -vE '^\s*$' | grep -vE '^\s+(Compiling|Fresh)' || true)
test -f functions/build/index.js || { echo "[build] worker-build produced no functions/build/index.js" >&2; exit 1; }
