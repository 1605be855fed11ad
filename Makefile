# Every target installs what it needs first: a local .venv with the package and its dev extras, at the
# versions of constraints.txt.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SCALE ?= full
export WANDB_SILENT ?= true

# (reproduce-table% and check-table% are pattern rules, so they cannot be .PHONY; no file of those names is made.)
.PHONY: install test test-all demo smoke bench-neurons bench-train bench-data bench-cli bench-memory energy-table clean reproduce-figures reproduce-all

# The stamp is written only after pip succeeds, so a failed install is retried on the next call.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The linter first (ruff, configured in pyproject.toml), then the suite on every core (pytest-xdist);
# each test is independent of the others.
test: $(STAMP)
	$(PY) -m ruff check src tests scripts
	WANDB_MODE=disabled $(PY) -m pytest -q -n auto

test-all: $(STAMP)
	WANDB_MODE=disabled $(PY) -m pytest -q -n auto -m ''

# The main job: the γ dilemma on seqdigits (offline), LIF and ILIF × 3 γ × 3 seeds, on a CPU.
# wandb is off while it trains (a wandb run costs seconds each); the runs can be sent afterwards.
demo: $(STAMP)
	WANDB_MODE=disabled $(PY) -m ilif.study demo
	$(PY) -m ilif.report --demo
	@echo "The runs are in runs/demo/. To see them in a wandb dashboard: $(VENV)/bin/wandb login, then"
	@echo "  $(VENV)/bin/ilif-report --upload-wandb runs/demo/*"

# Tables and figures: make reproduce-tableN SCALE=full|mini|smoke (each runs its grid, skipping
# finished runs, then builds the report into results/<scale>/). An experiment file's name says which
# table it makes (table<N>, table<N>_<variant>; src/ilif/grid.py). Table 4 reads the Table 1 runs.
reproduce-table%: $(STAMP)
	$(PY) -m ilif.study --table $* --scale $(SCALE)
	$(PY) -m ilif.report --scale $(SCALE) --tables $*

reproduce-figures: $(STAMP)
	$(PY) -m ilif.study --figures --scale $(SCALE)
	$(PY) -m ilif.report --scale $(SCALE) --figures

reproduce-all: $(STAMP)
	$(PY) -m ilif.study --table all --figures --scale $(SCALE)
	$(PY) -m ilif.report --scale $(SCALE) --tables all --figures

# Is a reproduction within what is expected? make check-tableN SCALE=mini|full trains the table's grid
# (skipping finished runs) and compares each cell with results/expected.yaml; exit 1 when one is outside
# its range or missing. CI runs make check-table1 SCALE=mini.
check-table%: $(STAMP)
	WANDB_MODE=disabled $(PY) -m ilif.study --table $* --scale $(SCALE)
	$(PY) -m ilif.report --scale $(SCALE) --tables $* --check

# Every table and figure on stand-in data: proves the path from config to table (run by CI).
smoke:
	$(MAKE) reproduce-all SCALE=smoke WANDB_MODE=disabled

bench-neurons: $(STAMP)
	$(PY) scripts/bench_neurons.py

bench-train: $(STAMP)
	$(PY) scripts/bench_train.py

bench-data: $(STAMP)
	$(PY) scripts/bench_data.py

bench-cli: $(STAMP)
	$(PY) scripts/bench_cli.py

bench-memory: $(STAMP)
	$(PY) scripts/bench_memory.py
	$(PY) scripts/bench_kernels.py

energy-table: $(STAMP)
	$(PY) scripts/energy_table.py

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
