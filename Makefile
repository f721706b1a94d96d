# mediaserver: `make demo` and `make test` are the two entry points (see README.md).
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) scripts/demo.py
	$(VENV)/bin/mediaserver demo

test: setup
	bash scripts/test.sh

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
