# The two commands a newcomer types first (README): `make up` and `make test`.
VENV ?= .venv
INVENTORY ?= inventory/lab.yml

.PHONY: install up test down status validate lint bench clean

install:
	@scripts/bootstrap.sh

## The main job: the whole cluster as lab hosts, converged and verified, with a summary.
up: install
	$(VENV)/bin/citadel up -i $(INVENTORY)

## Every test layer but bench (unit, gateway, exporter, and the lab end to end when root).
test: install
	scripts/test.sh

down: install
	$(VENV)/bin/citadel lab down -i $(INVENTORY)

status: install
	$(VENV)/bin/citadel lab status -i $(INVENTORY)

## inventory/production.yml is refused until its operators fill in their Clerk instance
## (REPLACE-ME, docs/gateway-auth.md): shown, then production is validated with stand-in values.
validate: install
	-$(VENV)/bin/citadel validate -i inventory/production.yml
	$(VENV)/bin/citadel validate -i tests/unit/inventories/production_clerk_filled.yml
	$(VENV)/bin/citadel validate -i inventory/lab.yml

## Benchmarks (bench/RESULTS.md): installs what they need (bench/install.sh: wrk and the other
## tools from Debian, as root), then bench/gateway.py, bench/clients.py (the gateway's own Redis
## and HTTP clients against the libraries) and bench/converge.py (root: a bench lab of its own).
## A missing tool or a run without a successful request stops with one line, exit 1.
BENCH_GATEWAY_ARGS ?=
BENCH_CONVERGE_ARGS ?=
bench: install
	bench/install.sh
	$(VENV)/bin/python bench/gateway.py $(BENCH_GATEWAY_ARGS)
	$(VENV)/bin/python bench/clients.py
	$(VENV)/bin/python bench/converge.py $(BENCH_CONVERGE_ARGS)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf reports .mypy_cache .ruff_cache .pytest_cache
