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

# stale OUTPUT PATH...: true when OUTPUT is missing or any file under PATH is newer. Both tools
# re-run wasm-bindgen and wasm-opt even when cargo has nothing to do (15 s for the Worker), so
# skipping them when no input changed is what makes a warm `make dev` fast.
stale() {
  local out=$1; shift
  [ -f "$out" ] || return 0
  [ -n "$(find "$@" -path functions/build -prune -o -type f -newer "$out" -print -quit)" ]
}

# quiet LOG CMD...: runs CMD with its chatter in LOG; on failure shows the log and fails.
quiet() {
  local log=$1; shift
  mkdir -p "$(dirname "$log")"
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "[build] failed: $*" >&2
    exit 1
  fi
  grep -E '^(warning|error)' "$log" || true
}

# trunk runs cargo with --offline (so it never tries to download its own tools); fetch the
# crates first so a fresh machine has them. Nearly instant when they are cached.
cargo fetch --quiet

if stale dist/index.html app core public Cargo.toml Cargo.lock Trunkfile.toml; then
  echo "[build] dashboard (trunk --release)"
  quiet target/build-dashboard.log trunk build --config Trunkfile.toml --release --offline
  # The console's other programs each build into their own directory (after the fleet
  # program's build, which empties dist/); the Worker serves their pages from there
  # (core::console).
  for program in device operations; do
    quiet "target/build-$program.log" trunk build --config Trunkfile.toml --release --offline \
      --dist "dist/app/$program" --public-url "/app/$program/" "app/$program/index.html"
  done
  quiet target/build-virtual.log trunk build --config Trunkfile.toml --release --offline \
    --dist dist/virtual --public-url /virtual/ app/virtual/index.html
  touch dist/index.html
else
  echo "[build] dashboard is up to date"
fi

# TWINHUB_FEATURES: cargo features of the Worker, e.g. `bench` (the benchmarks' routes; `make
# test` and the benchmark scripts set it). A build with other features than the last is stale.
features=${TWINHUB_FEATURES:-}
stamp=functions/build/.features
if stale functions/build/index.js functions core Cargo.toml Cargo.lock || [ "$(cat "$stamp" 2>/dev/null)" != "$features" ]; then
  echo "[build] worker (worker-build --release${features:+ --features $features})"
  (cd functions && quiet ../target/build-worker.log worker-build --release ${features:+--features "$features"})
  echo "$features" > "$stamp"
  touch functions/build/index.js
else
  echo "[build] worker is up to date"
fi
