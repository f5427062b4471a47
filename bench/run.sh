#!/usr/bin/env bash
# `make bench`: the breaker bench in process, then a stack of its own (free ports, temporary
# directory) for bench/gateway.ts, bench/kafka-producers.ts, bench/payments.ts, bench/trigger-path.ts
# and bench/operations.ts; each writes
# its block of bench/RESULTS.md. A failing bench makes the script fail; the stack is always stopped.
# Payments run before the trigger path, whose last round leaves a backlog to the teardown; the
# operations bench runs last, since its database failovers kill the primary PostgreSQL.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
export FLOWGATE_BENCH_VIA_MAKE=1  # each RESULTS.md block then names `make bench` as its command
run() {
  echo "== $1"
  node --import tsx "$@" || { echo "!! $1 failed" >&2; status=1; }
}
run bench/breaker.ts "$@"
bash bench/peers/install.sh || { echo "!! bench/peers/install.sh failed" >&2; exit 1; }
dir="$(mktemp -d "${TMPDIR:-/tmp}/flowgate-bench.XXXXXX")"
chmod 755 "$dir"
trap 'node bin/flowgate.js stack down --dir "$dir" >/dev/null 2>&1; rm -rf "$dir"' EXIT
# The failover bench needs the worker to fail over without waiting for an operator.
FLOWGATE_DB_FAILOVER=automatic node bin/flowgate.js stack up --test --dir "$dir" || { tail -n 30 "$dir"/logs/*.log; exit 1; }
export FLOWGATE_STACK_DIR="$dir"
run bench/gateway.ts "$@"
run bench/kafka-producers.ts "$@"
run bench/payments.ts "$@"
run bench/trigger-path.ts "$@"
run bench/operations.ts "$@"
exit "$status"
