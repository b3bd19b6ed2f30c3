#!/usr/bin/env bash
# Serves the built Worker (functions/build + dist/) under workerd directly, with a config generated
# from wrangler.toml by scripts/workerd-config.mjs. Build first (`make build`); nothing is built here.
#
#   scripts/serve.sh OUT_DIR [PORT]
#
# OUT_DIR gets config.capnp (mode 0600). Environment:
#   PORT                  listening port (default 18787) on TWINHUB_LISTEN_HOST (default 127.0.0.1)
#   TWINHUB_STORAGE       Durable Object storage directory (default OUT_DIR/storage)
#   TWINHUB_MQTT_LISTEN   with TLS: where MQTT over TLS is taken (default TWINHUB_LISTEN_HOST:8883;
#                         "off": none)
#   TWINHUB_AMQP_LISTEN   where plain AMQP is taken (the Event Hub-compatible endpoint, as the Event
#                         Hubs emulator on 5672; default: none)
#   TWINHUB_AMQPS_LISTEN  with TLS: where AMQP over TLS is taken (default: none; IoT Hub's is 5671)
#   TWINHUB_ENV_FILE      a NAME=VALUE file of secrets/vars (default .dev.vars when present);
#                         its values are written into config.capnp
#   Any of the Worker's settings set in this environment (TWINHUB_OWNER_KEY, TWINHUB_POLICIES, ...,
#   see PASS_ENV below) is bound with `fromEnvironment`: read by workerd at start, never written.
#   WORKERD               the workerd binary (default: the one pinned in node_modules)
#   WORKERD_FLAGS         extra workerd flags, e.g. "--verbose"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:?usage: scripts/serve.sh OUT_DIR [PORT]}
port=${2:-${PORT:-18787}}
host=${TWINHUB_LISTEN_HOST:-127.0.0.1}
storage=${TWINHUB_STORAGE:-$out/storage}
workerd=${WORKERD:-$root/node_modules/@cloudflare/workerd-linux-64/bin/workerd}

for f in "$root/functions/build/index.js" "$root/functions/build/index_bg.wasm" "$root/dist/index.html" "$workerd"; do
  [ -e "$f" ] || { echo "serve: $f is missing (build first: make build; npm ci for workerd)" >&2; exit 1; }
done

PASS_ENV=(TWINHUB_OWNER_KEY TWINHUB_POLICIES TWINHUB_HOST_NAMES TWINHUB_TIER TWINHUB_BENCH_ECHO TWINHUB_DESIRED_CATCH_UP
  UPSTREAM_CONNECTION_STRING UPSTREAM_SCHEME TWIN_HISTORY_RETENTION TELEMETRY_RETENTION
  TELEMETRY_RETENTION_SECS MQTT_CONNECT_TIMEOUT_MS JOB_RETENTION_SECS JOB_DEVICES_PER_SECOND
  JOB_CONCURRENCY DEVICE_MESSAGES_PER_SECOND FLEET_INDEX_SHARDS GATEWAY_SHARDS EVENTHUB_PARTITIONS)

args=(--wrangler "$root/wrangler.toml" --storage "$storage" --listen "$host:$port" --out "$out/config.capnp")
# TWINHUB_TLS_KEY and TWINHUB_TLS_CERT (PEM): serve https instead of http.
mqtt=
if [ -n "${TWINHUB_TLS_KEY:-}" ]; then
  args+=(--tls-key "$TWINHUB_TLS_KEY" --tls-cert "${TWINHUB_TLS_CERT:?TWINHUB_TLS_CERT goes with TWINHUB_TLS_KEY}")
  mqtt=${TWINHUB_MQTT_LISTEN:-$host:8883}
  if [ "$mqtt" = "off" ]; then mqtt=; else args+=(--mqtt-listen "$mqtt"); fi
fi
if [ -n "${TWINHUB_AMQP_LISTEN:-}" ]; then args+=(--amqp-listen "$TWINHUB_AMQP_LISTEN"); fi
# The benchmarks' platform-floor object, in a Worker built with the `bench` feature.
if [ "${TWINHUB_BENCH_ECHO:-}" = "1" ]; then args+=(--bench); fi
if [ -n "${TWINHUB_AMQPS_LISTEN:-}" ] && [ -n "${TWINHUB_TLS_KEY:-}" ]; then args+=(--amqps-listen "$TWINHUB_AMQPS_LISTEN"); fi
env_file=${TWINHUB_ENV_FILE:-}
if [ -z "$env_file" ] && [ -f "$root/.dev.vars" ]; then env_file="$root/.dev.vars"; fi
if [ -n "$env_file" ]; then args+=(--env-file "$env_file"); fi
for name in "${PASS_ENV[@]}"; do
  if [ -n "${!name+x}" ]; then args+=(--from-env "$name"); fi
done

# workerd holds a descriptor per socket and three per awake Durable Object (its SQLite database,
# WAL and shared memory, until it is evicted 10 s after its last request); when accept() runs
# out it exits. Many systems start processes with a soft limit of 1,024: take the hard limit
# (TWINHUB_NOFILE sets a lower one, as the headroom test does), and tell the Worker the limit:
# it admits work against what is left (core::headroom).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ -n "${TWINHUB_NOFILE:-}" ]; then ulimit -n "$TWINHUB_NOFILE"; fi
args+=(--fd-limit "$(ulimit -n)")

mkdir -p "$out"
node "$root/scripts/workerd-config.mjs" "${args[@]}"
scheme=http; [ -n "${TWINHUB_TLS_KEY:-}" ] && scheme=https
echo "serve: twinhub on $scheme://$host:$port${mqtt:+ and mqtts://$mqtt}${TWINHUB_AMQP_LISTEN:+ and amqp://$TWINHUB_AMQP_LISTEN} (config $out/config.capnp, storage $storage)" >&2
# --experimental: localDisk storage is documented as experimental (workerd 2026-04-26 also ran it
# without the flag); TCP sockets and the `experimental` compat flag do need it.
# shellcheck disable=SC2086
exec "$workerd" serve "$out/config.capnp" --experimental ${WORKERD_FLAGS:-}
