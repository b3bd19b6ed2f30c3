#!/usr/bin/env bash
# Installs every tool twinhub needs to build and run, skipping what is already there.
# Idempotent and offline-safe once run: a second run only checks versions.
#   scripts/tools.sh          build + run tools (rust target, trunk, wasm-bindgen, worker-build, npm)
#   scripts/tools.sh --test   also what the tests need (Debian chromium, the Azure SDK venv)
#   scripts/tools.sh --bench  also the device benchmark's baselines (rumqttd, Debian mosquitto)
#   scripts/tools.sh --profile  also strace and perf (scripts/profile-telemetry.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

TRUNK_VERSION=0.21.14          # 0.22 needs a newer rustc than the machines have
WORKER_BUILD_VERSION=0.8.7     # matches the `worker` crate in functions/Cargo.toml
# wasm-bindgen-cli must equal the wasm-bindgen crate pinned with '=' in Cargo.toml.
WASM_BINDGEN_VERSION=$(sed -n 's/^wasm-bindgen = "=\(.*\)"/\1/p' Cargo.toml)

say() { printf '\033[1;34m[tools]\033[0m %s\n' "$*"; }

installed_version() { # bin, prints the version it reports or nothing
  command -v "$1" >/dev/null 2>&1 && "$1" --version 2>/dev/null | head -n1 | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1 || true
}

cargo_tool() { # crate, bin, version
  local have; have=$(installed_version "$2")
  if [ "$have" != "$3" ]; then
    say "installing $1 $3 (have: ${have:-none}); this compiles from source once"
    # --locked first for reproducibility; if the registry no longer has a locked version
    # (seen: wasm-bindgen-cli 0.2.130's lock names a webpki-roots the registry lacks), resolve anew.
    cargo install "$1" --version "$3" --locked --quiet || cargo install "$1" --version "$3" --quiet
  fi
}

export PATH="$HOME/.cargo/bin:$PATH"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
cargo_tool trunk trunk "$TRUNK_VERSION"
cargo_tool wasm-bindgen-cli wasm-bindgen "$WASM_BINDGEN_VERSION"
cargo_tool worker-build worker-build "$WORKER_BUILD_VERSION"
if [ "${1:-}" = "--test" ]; then
  cargo_tool cargo-fuzz cargo-fuzz 0.13.2
fi
if [ "${1:-}" = "--profile" ]; then
  # scripts/profile-telemetry.sh's counters: Debian strace and linux-perf.
  for pkg in strace:strace linux-perf:perf; do
    if ! command -v "${pkg#*:}" >/dev/null; then
      say "installing Debian ${pkg%%:*}"
      SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkg%%:*}" >/dev/null
    fi
  done
fi
if [ "${1:-}" = "--bench" ]; then
  # rumqttd 0.20.0's lockfile pins metrics 0.22.1, which today's rustc refuses (E0521), so
  # cargo_tool's fallback resolves anew.
  cargo_tool rumqttd rumqttd 0.20.0
  if ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; then
    say "installing Debian mosquitto (the TCP baseline)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mosquitto >/dev/null
  fi
fi

# wrangler, esbuild (for worker-build), binaryen's wasm-opt, playwright-core: pinned in
# package-lock.json. Reinstall only when the lockfile changed since the last install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
fi

if [ "${1:-}" = "--test" ]; then
  # The real Azure SDKs, in a virtualenv; reinstalled only when requirements.txt changes.
  if [ ! -f .venv/.installed ] || [ tests/python/requirements.txt -nt .venv/.installed ]; then
    say "installing the Azure Python SDKs into .venv"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
    touch .venv/.installed
  fi
  # The test CA and certificates (scripts/dev-cert.sh); the harness itself speaks https (rustls).
  command -v openssl >/dev/null || { echo "[tools] openssl is required for the https tests" >&2; exit 1; }
  if [ ! -x /usr/bin/chromium ]; then
    say "installing Debian chromium for browser tests"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  fi
fi
