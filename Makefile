# scalp_lib developer commands. `make test` is what CI runs (.ci/run); `make reports` renders every report.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export MPLBACKEND ?= Agg
export PYTHONUNBUFFERED ?= 1
PYTEST_ARGS ?=
# CI has 2 cores: two pytest-xdist workers (each test keeps 1 thread); --dist loadfile: a file runs whole and in order
# on one worker (module fixtures once, checks that read what earlier tests counted). PYTEST_WORKERS=0: one process
PYTEST_WORKERS ?= 2

.PHONY: install test pytest sync-check reports lab clean-reports mutate

$(STAMP): pyproject.toml constraints-ci.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints-ci.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# nbdev-clean and nbdev-export must change nothing: notebooks are the only source of scalp_lib/*.py
sync-check: install
	$(BIN)/nbdev-clean
	$(BIN)/nbdev-export
	@if [ -n "$$(git status --porcelain)" ]; then \
	  echo "ERROR: nbdev-clean/nbdev-export changed files (or the tree was not clean):"; git status --porcelain; \
	  echo "Run 'make sync' (nbdev-export + nbdev-clean) and commit the result."; exit 1; fi

sync: install
	$(BIN)/nbdev-clean
	$(BIN)/nbdev-export

pytest: install
	$(PY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS) tests

test: sync-check pytest

# mutation testing of the money and look-ahead modules (tools/mutation.toml); hours on 2 cores, never part of `make test`.
# MUTATE_ARGS: module names to run only those (e.g. MUTATE_ARGS="metrics splits"), --report to print the scores only.
MUTATE_ARGS ?=
mutate: install
	$(PY) -m pip install -q -c constraints-ci.txt -e ".[dev,mutate]"
	$(PY) tools/mutate.py --out build/mutate/report.md $(MUTATE_ARGS)

reports: install
	$(BIN)/scalp-report --all --output-dir reports

lab: install
	$(BIN)/jupyter lab nbs
