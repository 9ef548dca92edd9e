# Two entry points a new user needs (see README): `make demo` and `make test`.
# `make demo-train` is the demo that trains its own model even when a shipped one is installed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo demo-train test bench clean

$(BIN)/midistruct: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch==2.13.0 is a CPU build on this project's machines (found on local disk);
	# elsewhere pip resolves it like any dependency.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/midistruct

demo: install
	$(BIN)/midistruct quickstart

demo-train: install
	$(BIN)/midistruct quickstart --train

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/prepare.py

clean:
	rm -rf $(VENV) data runs out
