# jmapd: the two commands a developer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
CONFIG ?= conf/jmapd.yaml
BIN     = $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The stamp files record which install was done, so repeated runs are quick
# and a change of setup.cfg reinstalls.
$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q .
	touch $@

$(VENV)/.installed-test: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q '.[test]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-dev: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/pip install -q '.[test,dev]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-test

run: $(VENV)/.installed
	$(BIN)/pip install -q --no-deps --force-reinstall . >/dev/null
	$(BIN)/jmapd-admin --config $(CONFIG) demo
	cd / && $(CURDIR)/$(BIN)/twistd -n jmapd --config $(CURDIR)/$(CONFIG)

# The project is installed (not only importable from the checkout), so the
# tests see the same twisted/plugins/ file that `twistd` does.
test: $(VENV)/.installed-test
	$(BIN)/pip install -q --no-deps --force-reinstall . >/dev/null
	$(BIN)/python -m tests.runner

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check jmapd tests twisted bench
	$(BIN)/mypy jmapd

bench: $(VENV)/.installed-test
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp*
