# Flowgate: the two commands are `make up` (the platform, with a demo tenant) and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
FLOWGATE := node bin/flowgate.js

.PHONY: help install deps up down status logs reset test test-unit test-integration test-dr lint typecheck check bench

help:
	@echo "make up      start the whole platform on 127.0.0.1 (demo tenant in .flowgate/local.env)"
	@echo "make down    stop it (data kept)      make reset   stop it and wipe its data"
	@echo "make status  what runs                make logs    follow every log"
	@echo "make test    install what is needed and run the whole suite on a stack of its own"
	@echo "make bench   run bench/ and write bench/RESULTS.md"

## Servers (cached in ~/.cache/flowgate) and node_modules.
install: deps
	@bash stack/install.sh

deps: node_modules/.package-lock.json
# Under a lock (on this checkout's lock file), and only if still stale once it is held: `make up`
# and `make test` started together must not both empty node_modules (the first one's processes
# may already run from it).
node_modules/.package-lock.json: package.json package-lock.json
	@flock package-lock.json sh -c '[ node_modules/.package-lock.json -nt package-lock.json ] && [ node_modules/.package-lock.json -nt package.json ] || npm ci --no-audit --no-fund --loglevel=error'
	@touch $@

up: install
	@$(FLOWGATE) stack up

down:
	@$(FLOWGATE) stack down

status:
	@$(FLOWGATE) stack status

logs:
	@$(FLOWGATE) stack logs

reset:
	@$(FLOWGATE) stack reset

typecheck: deps
	npx tsc --noEmit -p tsconfig.json

lint: deps
	npx eslint .

check: typecheck lint

test: install check
	@bash tests/run.sh all

test-unit: install  ## the unit tests use cached servers too (the time-skipping test server, Redis, promtool, kubeconform)
	@bash tests/run.sh unit

test-integration: install
	@bash tests/run.sh integration

test-dr: install  ## the disaster-recovery tests (they kill servers) on a stack of their own
	@bash tests/run.sh dr

bench: install
	@bash bench/run.sh
