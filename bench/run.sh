#!/usr/bin/env bash
# `make bench`: starts a stack of its own (free ports, temporary directory), runs bench/*.ts
# against it, writes bench/RESULTS.md, and always stops the stack.
set -uo pipefail
cd "$(dirname "$0")/.."
dir="$(mktemp -d "${TMPDIR:-/tmp}/flowgate-bench.XXXXXX")"
chmod 755 "$dir"
trap 'node bin/flowgate.js stack down --dir "$dir" >/dev/null 2>&1; rm -rf "$dir"' EXIT
node bin/flowgate.js stack up --test --dir "$dir" || { tail -n 30 "$dir"/logs/*.log; exit 1; }
FLOWGATE_STACK_DIR="$dir" node --import tsx bench/trigger-path.ts "$@"
