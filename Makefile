# Every target installs what it needs first: a local .venv with the package and its dev extras.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install test test-all bench-neurons energy-table clean

# The stamp is written only after pip succeeds, so a failed install is retried on the next call.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	WANDB_MODE=disabled $(PY) -m pytest -q

test-all: $(STAMP)
	WANDB_MODE=disabled $(PY) -m pytest -q -m ''

bench-neurons: $(STAMP)
	$(PY) scripts/bench_neurons.py

energy-table: $(STAMP)
	$(PY) scripts/energy_table.py

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
