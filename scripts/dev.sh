#!/usr/bin/env bash
# `make dev`: install what is missing, build, and run twinhub on http://127.0.0.1:${PORT:-8787}
# under workerd, Cloudflare's runtime, directly (no wrangler or node on the request path);
# `scripts/dev.sh --reload` (make dev-reload) through wrangler dev instead.
#
# TWINHUB_TLS=1 make dev serves https and wss on port 443 (PORT overrides) and MQTT over TLS on
# 8883 (TWINHUB_MQTT_LISTEN overrides; not under --reload: wrangler dev takes no TCP) for the Azure
# device SDKs, which verify the certificate: a CA and a server certificate for localhost and
# 127.0.0.1 are made once in .twinhub/ (trust .twinhub/ca.pem: SSL_CERT_FILE,
# NODE_EXTRA_CA_CERTS, or server_verification_cert). Binding 443 needs root or a lowered
# net.ipv4.ip_unprivileged_port_start.
#
# The Event Hub-compatible endpoint takes plain AMQP on 127.0.0.1:5672 (TWINHUB_AMQP_LISTEN
# overrides, "off" for none), as the Event Hubs emulator does, and with TLS AMQPS on 5671
# (TWINHUB_AMQPS_LISTEN); the connection string for azure-eventhub is printed below.
set -euo pipefail
cd "$(dirname "$0")/.."
TLS=${TWINHUB_TLS:-0}
if [ "$TLS" = "1" ]; then
  PORT=${PORT:-443}
  HOST=localhost
else
  PORT=${PORT:-8787}
  HOST=127.0.0.1
fi

scripts/tools.sh
scripts/build.sh

# The owner key: TWINHUB_OWNER_KEY wins; otherwise keep the one in .dev.vars; otherwise make one.
if [ -n "${TWINHUB_OWNER_KEY:-}" ]; then
  key="$TWINHUB_OWNER_KEY"
elif [ -f .dev.vars ] && grep -q '^TWINHUB_OWNER_KEY=' .dev.vars; then
  key=$(sed -n 's/^TWINHUB_OWNER_KEY=//p' .dev.vars | head -n1)
else
  key=$(head -c 32 /dev/urandom | base64)
fi
if ! printf '%s' "$key" | base64 -d 2>/dev/null | wc -c | grep -qx 32; then
  echo "TWINHUB_OWNER_KEY must be base64 of 32 bytes" >&2
  exit 1
fi
umask 077
printf 'TWINHUB_OWNER_KEY=%s\n' "$key" > .dev.vars

scheme=http
hostname="$HOST:$PORT"
if [ "$TLS" = "1" ]; then
  scripts/dev-cert.sh .twinhub
  export TWINHUB_TLS_KEY=.twinhub/server-key.pem TWINHUB_TLS_CERT=.twinhub/server.pem
  scheme=https
  [ "$PORT" = "443" ] && hostname="$HOST"
fi

cs="HostName=$hostname;SharedAccessKeyName=iothubowner;SharedAccessKey=$key"
login="$scheme://$hostname/#cs=$(node -e 'process.stdout.write(encodeURIComponent(process.argv[1]))' "$cs")"
cat <<MSG

  twinhub is starting on $scheme://$hostname

  Owner connection string (Azure SDKs, IoT Explorer, the dashboard's sign-in):
    $cs

  Dashboard, already signed in (the key stays in the URL fragment, never sent to the server):
    $login

MSG
amqp=${TWINHUB_AMQP_LISTEN:-127.0.0.1:5672}
if [ "$amqp" != "off" ] && [ "${1:-}" != "--reload" ]; then
  export TWINHUB_AMQP_LISTEN="$amqp"
  cat <<MSG
  Event Hub-compatible endpoint (device telemetry for azure-eventhub consumers, plain AMQP):
    Endpoint=sb://$amqp/;SharedAccessKeyName=iothubowner;SharedAccessKey=$key;EntityPath=twinhub;UseDevelopmentEmulator=true

MSG
else
  unset TWINHUB_AMQP_LISTEN
fi
if [ "$TLS" = "1" ]; then
  export TWINHUB_AMQPS_LISTEN=${TWINHUB_AMQPS_LISTEN:-$HOST:5671}
  cat <<MSG
  Devices: HostName=$hostname;DeviceId=<id>;SharedAccessKey=<device key>
  on the SDKs' defaults (MQTT over TLS on ${TWINHUB_MQTT_LISTEN:-8883}) or MQTT over WebSocket on $PORT;
  trust the CA with SSL_CERT_FILE=.twinhub/ca.pem (Python), NODE_EXTRA_CA_CERTS=.twinhub/ca.pem (Node)

MSG
fi
# --reload (`make dev-reload`): through wrangler dev, the code-reload loop (state in
# .wrangler/state). Otherwise under workerd directly (scripts/serve.sh; its config generated
# from wrangler.toml), state in .twinhub/workerd/storage.
if [ "${1:-}" = "--reload" ]; then
  tls_args=()
  if [ "$TLS" = "1" ]; then
    tls_args=(--local-protocol https --https-key-path "$TWINHUB_TLS_KEY" --https-cert-path "$TWINHUB_TLS_CERT")
  fi
  export WRANGLER_SEND_METRICS=false
  exec node_modules/.bin/wrangler dev --ip 127.0.0.1 --port "$PORT" "${tls_args[@]}" --show-interactive-dev-session=false
fi
export TWINHUB_ENV_FILE=.dev.vars TWINHUB_STORAGE=.twinhub/workerd/storage
exec scripts/serve.sh .twinhub/workerd "$PORT"
