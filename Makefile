# The README's two commands: `make demo` (testbed up + a tour with the stock rucio CLI) and `make test`.
# Both install everything on a fresh machine first: Debian packages, the project venv, the Rucio server venv.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install lint bench

demo: install
	bash scripts/tour.sh

test: install lint
	$(BIN)/pytest -ra

bench: install  # needs a running testbed: make demo (or datalake testbed up) first
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test,bench]'
	$(BIN)/datalake testbed up
	eval "$$($(BIN)/datalake testbed env)" && $(BIN)/python bench/register.py && $(BIN)/python bench/pull.py && $(BIN)/python bench/transfer.py && $(BIN)/python bench/process.py && $(BIN)/python bench/load.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

install: $(VENV)/.installed
	$(BIN)/datalake testbed install

$(VENV)/.installed: pyproject.toml scripts/setup-venv.sh
	bash scripts/setup-venv.sh $(VENV)
	touch $@
