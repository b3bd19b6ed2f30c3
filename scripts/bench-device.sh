#!/usr/bin/env bash
# Device endpoint figures for BENCHMARKS.md (issue 5), with rumqttd and mosquitto baselines.
# usage: scripts/bench-device.sh [devices=1000] [sessions=10000]
# Installs the baselines if missing, builds the Worker in release, runs the load generator.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/tools.sh --bench
TWINHUB_FEATURES=bench scripts/build.sh
# 10,000 sessions hold 10,000 sockets here and more in wrangler: raise the soft limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec cargo run --release --quiet -p twinhub-e2e --bin bench-device -- "$@"
