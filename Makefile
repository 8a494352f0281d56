# The two commands of the quickstart: `make demo` and `make test`. Both build .venv from scratch if needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

.PHONY: demo test bench servers clean

$(STAMP): pyproject.toml runtimes/python/pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("shim needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' -e runtimes/python
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shim demo $(ARGS)

# Real servers the tests need (strace for the syscall trace); installed from the system's packages.
servers:
	@sh tests/setup-servers.sh

test: $(STAMP) servers
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)
	sh bench/setup.sh
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
