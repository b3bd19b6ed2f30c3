#!/usr/bin/env bash
# Runs every cargo-fuzz target of core/ for SECONDS each (default 600, the issue's 10 minutes).
#   scripts/fuzz.sh [SECONDS]
# cargo-fuzz needs nightly-only flags; RUSTC_BOOTSTRAP=1 lets the machine's stable rustc accept
# them (no other toolchain can be installed here). Findings land in core/fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../core/fuzz"
export PATH="$HOME/.cargo/bin:$PATH"
seconds=${1:-600}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked --quiet
export RUSTC_BOOTSTRAP=1
for target in mqtt_decode session device_client twin_patch sas_parse cbs_token query_parse job_request amqp_decode amqp_connection amqp_device; do
  log=$(mktemp)
  if cargo fuzz run "$target" -- -max_total_time="$seconds" >"$log" 2>&1; then
    printf '[fuzz] %-12s clean for %ss: %s\n' "$target" "$seconds" "$(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$log" | tail -n1)"
  else
    tail -n 40 "$log" >&2
    echo "[fuzz] $target FAILED; the input is in core/fuzz/artifacts/$target/" >&2
    exit 1
  fi
  rm -f "$log"
done
