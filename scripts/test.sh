#!/usr/bin/env bash
# `make test`: install what tests need, build, lint, and run every test: core unit tests,
# end-to-end tests against real `wrangler dev` instances, and the dashboard in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/tools.sh --test
scripts/build.sh

echo "[test] format and lints"
cargo fmt --all -- --check
cargo clippy --quiet -p twinhub-core -p twinhub-e2e --all-targets -- -D warnings
cargo clippy --quiet -p twinhub-functions -p twinhub-app --target wasm32-unknown-unknown -- -D warnings

echo "[test] cargo test (core unit tests + end-to-end + browser)"
cargo test -p twinhub-core -p twinhub-e2e
