#!/usr/bin/env bash
# Profiles workerd during bench-device's telemetry phase (issue 15's telemetry figure):
# fsync/pwrite counts (strace), the thread's CPU share (/proc ticks) and a perf call graph.
# usage: scripts/profile-telemetry.sh   (installs strace and perf if missing, builds, runs)
# Prints the counts; the call graph is in target/profile-telemetry.perf
# (`perf report -i target/profile-telemetry.perf --no-children --sort dso,sym`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/tools.sh --profile
scripts/build.sh
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --quiet -p twinhub-e2e --bin bench-device
out=target/profile-telemetry.txt
BENCH_RUNTIMES=workerd BENCH_TRANSPORTS=websocket target/release/bench-device 50 200 >"$out" 2>&1 &
bench=$!
# The loops fleet is the second fleet to connect; its reported-patch loop runs 10 s, then telemetry.
until [ "$(grep -c 'connected,' "$out")" -ge 2 ]; do sleep 0.2; done
sleep 11
pid=$(pgrep -f "workerd serve" | head -n1)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=$(ticks "$pid")
sleep 4
echo "workerd CPU: $(( $(ticks "$pid") - before )) ticks of 400 (one core for 4 s)"
timeout -s INT 3 strace -f -c -e trace=fsync,fdatasync,pwrite64 -p "$pid" 2>&1 | tail -n 6 || true
timeout -s INT 3 perf record -F 499 -g -p "$pid" -o target/profile-telemetry.perf >/dev/null 2>&1 || true
wait "$bench"
grep 'telemetry QoS' "$out" | head -n1
