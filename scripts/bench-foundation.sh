#!/usr/bin/env bash
# Foundation figures for BENCHMARKS.md, printed as a table:
#   - dashboard .wasm size, raw and gzipped, against the 400 KB gzipped goal
#   - Worker bundle size as wrangler reports it for upload, against the 1 MB gzipped goal
#   - cold `make dev` (fresh clone: npm ci + full release builds; tools already in ~/.cargo/bin)
#     and warm `make dev` (the same clone again), to the moment /api/health answers
# usage: scripts/bench-foundation.sh            (sizes + cold/warm; takes ~10 minutes on 2 cores)
#        scripts/bench-foundation.sh --sizes    (sizes only, from the current build)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export PATH="$HOME/.cargo/bin:$root/node_modules/.bin:$PATH"

kb() { awk -v b="$1" 'BEGIN { printf "%.1f KB", b / 1024 }'; }

sizes() {
  local wasm raw gz
  wasm=$(ls "$1"/dist/*.wasm | head -n1)
  raw=$(stat -c %s "$wasm"); gz=$(gzip -9 -c "$wasm" | wc -c)
  printf '| dashboard .wasm raw | %s | - |\n' "$(kb "$raw")"
  printf '| dashboard .wasm gzipped | %s | goal 400 KB: %s of it |\n' "$(kb "$gz")" \
    "$(awk -v a="$gz" 'BEGIN { printf "%.0f%%", 100 * a / (400 * 1024) }')"
  local out upload
  out=$(cd "$1" && wrangler deploy --dry-run --outdir "$(mktemp -d)" 2>&1 || true)
  upload=$(printf '%s\n' "$out" | grep -o 'Total Upload:.*' | head -n1)
  local gzk; gzk=$(printf '%s' "$upload" | sed -n 's/.*gzip: \([0-9.]*\) KiB.*/\1/p')
  printf '| Worker bundle (wrangler: %s) | %s KiB gzipped | goal 1 MB: %s of it; free plan limit 3 MB |\n' \
    "$upload" "$gzk" "$(awk -v a="$gzk" 'BEGIN { printf "%.0f%%", 100 * a / 1024 }')"
}

time_dev() { # dir, port -> seconds until /api/health answers
  local dir=$1 port=$2 start pid
  start=$(date +%s.%N)
  (cd "$dir" && PORT=$port TWINHUB_OWNER_KEY=$(head -c 32 /dev/urandom | base64) setsid scripts/dev.sh >"$dir/dev-$port.log" 2>&1) &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/api/health" >/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "make dev died; see $dir/dev-$port.log" >&2; tail -20 "$dir/dev-$port.log" >&2; exit 1; }
    sleep 0.5
  done
  awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'
  pkill -TERM -f -- "--port $port" || true
  kill -TERM -- -"$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  sleep 1
}

echo "| figure | value | against |"
echo "|---|---|---|"
if [ "${1:-}" = "--sizes" ]; then
  sizes "$root"
  exit 0
fi
clone=$(mktemp -d /tmp/twinhub-bench.XXXXXX)
git clone -q "$root" "$clone"
cold=$(time_dev "$clone" 18787)
warm=$(time_dev "$clone" 18788)
sizes "$clone"
printf '| cold make dev (fresh clone, tools cached) | %s s | - |\n' "$cold"
printf '| warm make dev (same clone again) | %s s | cold/warm = %s |\n' "$warm" \
  "$(awk -v c="$cold" -v w="$warm" 'BEGIN { printf "%.1fx", c / w }')"
rm -rf "$clone"
