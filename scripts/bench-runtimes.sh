#!/usr/bin/env bash
# Issue 15's side-by-side figures: each bench that starts its own hub (bench-query, bench-jobs,
# bench-upstream, bench-dashboard) once under workerd directly (the run command's runtime) and
# once through `wrangler dev`, in one run, one after the other on the same machine.
# (bench-patch and bench-device run both runtimes themselves: see BENCHMARKS.md.)
# usage: scripts/bench-runtimes.sh [bench ...]   (default: query jobs upstream dashboard)
# Each bench's table goes to target/bench-runtimes/{bench}-{runtime}.txt and to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/tools.sh --test
TWINHUB_FEATURES=bench scripts/build.sh
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release --quiet -p twinhub-e2e --bins
out=target/bench-runtimes
mkdir -p "$out"
benches=("$@")
[ ${#benches[@]} -gt 0 ] || benches=(query jobs upstream dashboard)
for bench in "${benches[@]}"; do
  for runtime in workerd wrangler; do
    echo "=== bench-$bench on $runtime"
    # One bench failing (wrangler dev has restarted its worker mid-run here) does not stop the rest.
    TWINHUB_TEST_RUNTIME=$runtime "target/release/bench-$bench" 2>&1 | tee "$out/$bench-$runtime.txt" ||
      echo "=== bench-$bench on $runtime FAILED (output above and in $out/$bench-$runtime.txt)"
  done
done
