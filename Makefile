# The README's two commands: `make demo` (testbed up + a tour with the stock rucio CLI) and `make test`.
# Both install everything on a fresh machine first: Debian packages, the project venv, the Rucio server venv,
# the two venvs exactly as the lock files say (uv.lock, datalake/testbed/locks/rucio-server.txt).
VENV ?= .venv
BIN := $(VENV)/bin
UV := $(CURDIR)/scripts/uv
SERVER_LOCK := datalake/testbed/locks/rucio-server
STOCK_LOCK := datalake/testbed/locks/stock-client
FTS_LOCK := datalake/testbed/locks/fts-client
COMPOSE_LOCK := datalake/testbed/locks/podman-compose

.PHONY: demo demo-sites test install lint lock lock-upgrade lock-check bench bench-sites

demo: install
	bash scripts/tour.sh

# the same tour on the site lake: each site a host of its own on a shaped link, in containers (podman; docker/)
demo-sites: install
	bash docker/sites.sh demo

test: EXTRAS = test
test: install lint
	$(BIN)/pytest -ra
	bash docker/sites.sh check

# coffea, for bench/process.py's comparison with coffea's executor
bench: EXTRAS = test bench
bench: install  # register and scale last: their 10,000-file rules keep the conveyor busy after them; starts the testbed if it is not up (make demo leaves it up); restarts its Dask servers if the venv changed
	$(BIN)/datalake testbed up
	eval "$$($(BIN)/datalake testbed env)" && $(BIN)/python bench/pull.py && $(BIN)/python bench/transfer.py && $(BIN)/python bench/process.py && $(BIN)/python bench/load.py && $(BIN)/python bench/setup.py && $(BIN)/python bench/register.py && $(BIN)/python bench/scale.py

# bench/sites.py on the site lake (podman): process, pull and rules at 50 Mbit/s, 100 Mbit/s and 1 Gbit/s uplinks
bench-sites: install
	bash docker/sites.sh bench

lint: EXTRAS = test
lint: install lock-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The venv is synced on every run (a no-op in a fraction of a second when it already matches uv.lock): the demo
# installs what it runs, the tests add their tools (EXTRAS).
install:
	bash scripts/setup-venv.sh $(VENV) $(EXTRAS)
	UV=$(UV) $(BIN)/datalake testbed install

# Re-resolve deliberately: after changing pyproject.toml or rucio-server.in (`lock` keeps every pin it can), or to
# move everything to the newest releases the ranges allow (`lock-upgrade`). Commit the lock files with the change.
lock:
	$(UV) lock
	bash scripts/lock-venv.sh $(SERVER_LOCK)
	bash scripts/lock-venv.sh $(STOCK_LOCK)
	bash scripts/lock-venv.sh $(FTS_LOCK) "" --no-emit-package m2crypto
	bash scripts/lock-venv.sh $(COMPOSE_LOCK)

lock-upgrade:
	$(UV) lock --upgrade
	bash scripts/lock-venv.sh $(SERVER_LOCK) --upgrade
	bash scripts/lock-venv.sh $(STOCK_LOCK) --upgrade
	bash scripts/lock-venv.sh $(FTS_LOCK) --upgrade --no-emit-package m2crypto
	bash scripts/lock-venv.sh $(COMPOSE_LOCK) --upgrade

lock-check:  # CI fails when a lock no longer matches what it was resolved from
	$(UV) lock --check --quiet
	bash scripts/lock-venv.sh $(SERVER_LOCK) --check
	bash scripts/lock-venv.sh $(STOCK_LOCK) --check
	bash scripts/lock-venv.sh $(FTS_LOCK) --check
	bash scripts/lock-venv.sh $(COMPOSE_LOCK) --check
