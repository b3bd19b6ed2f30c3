#!/usr/bin/env bash
# Profiles workerd during one phase of a hub benchmark (issue 15's PATCH and job figures):
# the thread's CPU share (/proc ticks over 4 s), then fsync/pwrite/openat counts (strace, 4 s),
# then a perf call graph (4 s). The profilers slow the run; its own table is printed last.
# usage: scripts/profile-hub.sh patch   (bench-patch's 100-client PATCH phase, 20,000 requests)
#        scripts/profile-hub.sh jobs    (bench-jobs' job over 10,000 twins)
# The call graph is in target/profile-<phase>.perf
# (`perf report -i target/profile-<phase>.perf --no-children --sort dso,sym`).
set -euo pipefail
cd "$(dirname "$0")/.."
phase=${1:?usage: scripts/profile-hub.sh patch|jobs}
scripts/tools.sh --profile
TWINHUB_FEATURES=bench scripts/build.sh
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
out=target/profile-$phase.txt
case "$phase" in
  patch)
    cargo build --release --quiet -p twinhub-e2e --bin bench-patch
    BENCH_RUNTIMES=workerd target/release/bench-patch 20000 >"$out" 2>&1 &
    ready='twin PATCH, 100 clients'; settle=3 ;;
  jobs)
    cargo build --release --quiet -p twinhub-e2e --bin bench-jobs
    target/release/bench-jobs 10000 1000 >"$out" 2>&1 &
    ready='created 10000 devices'; settle=8 ;;
  *) echo "unknown phase: $phase" >&2; exit 2 ;;
esac
bench=$!
until grep -q "$ready" "$out"; do kill -0 "$bench" 2>/dev/null || { cat "$out"; exit 1; }; sleep 0.5; done
sleep "$settle"
pid=$(pgrep -f "workerd serve" | head -n1)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=$(ticks "$pid")
sleep 4
echo "workerd CPU: $(( $(ticks "$pid") - before )) ticks of 400 (one core for 4 s)"
timeout -s INT 4 strace -f -c -e trace=fsync,fdatasync,pwrite64,openat -p "$pid" 2>&1 | tail -n 7 || true
timeout -s INT 4 perf record -F 499 -g -p "$pid" -o "target/profile-$phase.perf" >/dev/null 2>&1 || true
wait "$bench"
grep '^|' "$out"
