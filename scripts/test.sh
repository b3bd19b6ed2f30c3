#!/usr/bin/env bash
# `make test`: install what tests need, build, lint, and run every test: core unit tests,
# end-to-end tests against real `wrangler dev` instances, and the dashboard in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# The flood tests hold a few thousand sockets at once: the hard limit, not a 1,024 soft one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

scripts/tools.sh --test
# The Worker with the benchmarks' routes: the query and dashboard tests load their fleets with them.
TWINHUB_FEATURES=bench scripts/build.sh

echo "[test] format and lints"
cargo fmt --all -- --check
cargo clippy --quiet -p twinhub-core -p twinhub-e2e --all-targets -- -D warnings
cargo clippy --quiet -p twinhub-functions -p twinhub-app --features twinhub-functions/bench --target wasm32-unknown-unknown -- -D warnings

echo "[test] fuzz smoke: every core/fuzz target for 20 s (scripts/fuzz.sh runs the 10-minute campaigns)"
scripts/fuzz.sh 20

echo "[test] cargo test (core unit tests + end-to-end + browser)"
log=target/test-output.log
mkdir -p target
status=0
cargo test -p twinhub-core -p twinhub-app -p twinhub-e2e 2>&1 | tee "$log" || status=$?
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
