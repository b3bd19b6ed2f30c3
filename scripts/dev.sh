#!/usr/bin/env bash
# `make dev`: install what is missing, build, and run twinhub on http://127.0.0.1:${PORT:-8787}.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-8787}
HOST=127.0.0.1

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

cs="HostName=$HOST:$PORT;SharedAccessKeyName=iothubowner;SharedAccessKey=$key"
login="http://$HOST:$PORT/#cs=$(node -e 'process.stdout.write(encodeURIComponent(process.argv[1]))' "$cs")"
cat <<MSG

  twinhub is starting on http://$HOST:$PORT

  Owner connection string (Azure SDKs, IoT Explorer, the dashboard's sign-in):
    $cs

  Dashboard, already signed in (the key stays in the URL fragment, never sent to the server):
    $login

MSG
export WRANGLER_SEND_METRICS=false
exec node_modules/.bin/wrangler dev --ip "$HOST" --port "$PORT" --show-interactive-dev-session=false
