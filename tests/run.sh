#!/usr/bin/env bash
# Runs the suite. `unit`: pure logic and time-skipping workflow tests. `integration`: starts a
# stack of its own (real servers and Flowgate's four processes, free ports, a temporary
# directory), runs tests/integration against it and always stops it, pass or fail. `dr`: the
# disaster-recovery tests, which kill servers of the stack, on another fresh stack.
set -uo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
# --test-force-exit: a handle a failed test leaves open (a NATS connection) must not hang the run.
node_test=(node --import tsx --test --test-force-exit --test-reporter=spec)

run_unit() {
  "${node_test[@]}" --test-concurrency=2 tests/unit/*.test.ts tests/workflows/*.test.ts
}

# Integration test files that run alone: data-plane-config stops the stack's admin and
# PostgreSQL, gateway-audit its Kafka; runbooks, payments, third-party, faults and dr-drills
# rotate the stack's shared secrets (the payment provider's key, the processes' login) or run
# platform runbooks. Two of them side by side, or one beside another file, fail each other.
SERIAL="data-plane-config gateway-audit runbooks payments third-party faults dr-drills"

stack_dir=""
stop_stack() {
  [ -n "$stack_dir" ] || return 0
  node bin/flowgate.js stack down --dir "$stack_dir" >/dev/null 2>&1
  if [ "${KEEP_TEST_STACK:-}" = "" ]; then rm -rf "$stack_dir"; else echo "test stack kept in $stack_dir"; fi
  stack_dir=""
}

run_on_stack() {
  trap stop_stack EXIT
  # The workflow bundle the workers tests spawn start from (FLOWGATE_TEST_WORKFLOW_BUNDLE, read by
  # tests/helpers/stack.ts): built once from this tree while the stack starts, instead of by each
  # such worker (a few seconds of webpack each). Without it, each worker bundles for itself.
  local bundle_dir bundle_pid
  bundle_dir="$(mktemp -d "${TMPDIR:-/tmp}/flowgate-bundle.XXXXXX")"
  node --import tsx worker/bundle.ts "$bundle_dir/workflows.js" >"$bundle_dir/out.log" 2>&1 &
  bundle_pid=$!
  # A server that fails at start-up gets one more try on fresh ports and a fresh directory; the
  # reason is printed last, after the logs, so it is what a CI log's tail shows.
  local attempt
  for attempt in 1 2; do
    stack_dir="$(mktemp -d "${TMPDIR:-/tmp}/flowgate-test.XXXXXX")"
    chmod 755 "$stack_dir"
    echo "starting the test stack in $stack_dir"
    if node bin/flowgate.js stack up --test --dir "$stack_dir" 2>&1 | tee "$stack_dir/up.out"; [ "${PIPESTATUS[0]}" -eq 0 ]; then break; fi
    echo "the test stack did not start (attempt $attempt); logs:"; tail -n 30 "$stack_dir"/logs/*.log
    echo "--- why the test stack did not start (attempt $attempt) ---"; tail -n 20 "$stack_dir/up.out"
    stop_stack
    [ "$attempt" -eq 2 ] && { wait "$bundle_pid"; rm -rf "$bundle_dir"; return 1; }
  done
  if wait "$bundle_pid"; then export FLOWGATE_TEST_WORKFLOW_BUNDLE="$bundle_dir/workflows.js"
  else echo "the workflow bundle was not built (each test worker bundles for itself):"; tail -n 5 "$bundle_dir/out.log"; fi
  # Two files at a time, except those that stop the stack's own servers or change what every
  # test shares (SERIAL, and the DR tests): those run alone, one after the other, afterwards.
  local parallel=() serial=() f rc=0
  for f in "$@"; do
    if [[ "$f" == tests/dr/* || " $SERIAL " == *" $(basename "$f" .test.ts) "* ]]; then serial+=("$f"); else parallel+=("$f"); fi
  done
  if [ ${#parallel[@]} -gt 0 ]; then
    FLOWGATE_STACK_DIR="$stack_dir" "${node_test[@]}" --test-concurrency=2 "${parallel[@]}" || rc=$?
  fi
  if [ ${#serial[@]} -gt 0 ]; then
    FLOWGATE_STACK_DIR="$stack_dir" "${node_test[@]}" --test-concurrency=1 "${serial[@]}" || rc=$?
  fi
  unset FLOWGATE_TEST_WORKFLOW_BUNDLE
  rm -rf "$bundle_dir"
  if [ $rc -ne 0 ]; then
    echo "--- last lines of the test stack's logs ---"; tail -n 15 "$stack_dir"/logs/*.log
    echo "--- errors and warnings of the stack's processes (last 4 each) ---"
    for p in gateway admin triggers worker; do
      grep -E '"level":"(warn|error|fatal)"' "$stack_dir/logs/$p.log" 2>/dev/null | tail -n 4 | cut -c1-400
    done
    echo "--- end of errors and warnings ---"
  fi
  stop_stack
  return $rc
}

run_integration() { if [ $# -gt 0 ]; then run_on_stack "$@"; else run_on_stack tests/integration/*.test.ts; fi; }
# The DR stack's worker fails over on its own (the others wait for an operator's approval, so a
# test that stops PostgreSQL for a few seconds starts a run that waits and then finds it back).
run_dr() {
  [ $# -gt 0 ] || set -- tests/dr/*.test.ts
  FLOWGATE_DB_FAILOVER=automatic run_on_stack "$@"
}

# The failing tests of a stage's output, a few lines each (which test, where, the first lines of
# its error), printed again at the very end of `all`: a CI log's tail then says what failed and why.
failure_summary() {
  awk '/^✖ failing tests:/ { on = 1; next }
       on && /^test at / { print; next }
       on && /^✖ / { print; msg = 2; next }
       on && msg > 0 && $0 !~ /^[[:space:]]*$/ && $0 !~ /^[[:space:]]+at / { print substr($0, 1, 400); msg--; next }' "$1"
  sed -n '/^--- errors and warnings of the stack/,/^--- end of errors and warnings ---/p' "$1" | sed '$d'
}

case "$what" in
  unit) run_unit ;;
  integration) shift; run_integration "$@" ;;
  dr) shift; run_dr "$@" ;;
  all)
    outputs="$(mktemp -d "${TMPDIR:-/tmp}/flowgate-test-output.XXXXXX")"
    run_unit 2>&1 | tee "$outputs/unit"; unit_rc=${PIPESTATUS[0]}
    run_integration 2>&1 | tee "$outputs/integration"; int_rc=${PIPESTATUS[0]}
    run_dr 2>&1 | tee "$outputs/dr"; dr_rc=${PIPESTATUS[0]}
    for stage in unit:$unit_rc integration:$int_rc dr:$dr_rc; do
      name="${stage%%:*}" rc="${stage##*:}"
      if [ "$rc" -ne 0 ]; then echo "=== $name: failed (exit $rc) ==="; failure_summary "$outputs/$name"; fi
    done
    rm -rf "$outputs"
    [ $unit_rc -eq 0 ] && [ $int_rc -eq 0 ] && [ $dr_rc -eq 0 ] ;;
  *) echo "usage: tests/run.sh unit|integration [files…]|dr [files…]|all" >&2; exit 2 ;;
esac
