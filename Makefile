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
	$(BIN)/twistd --pidfile= -n jmapd --config $(CONFIG)

# The project is installed (not only importable from the checkout), so the
# tests see the same twisted/plugins/ file that `twistd` does.
test: $(VENV)/.installed-test
	$(BIN)/pip install -q --no-deps --force-reinstall . >/dev/null
	$(BIN)/python -m tests.runner

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check jmapd tests twisted bench
	$(BIN)/mypy jmapd

# The benchmark suite (docs/benchmarks.md): BENCH_ARGS passes options, e.g.
# make bench BENCH_ARGS="--messages 10000 --workloads list_view".
BENCH_ARGS ?=
CYRUS_PACKAGES = cyrus-imapd cyrus-clients cyrus-admin sasl2-bin cyrus-caldav

bench: $(VENV)/.installed-test
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install -q '.[bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

# The same against Cyrus IMAP from ../shared/peers/cyrus (installed from
# Debian packages when missing; this needs root).
.PHONY: bench-peer
bench-peer: $(VENV)/.installed-test
	@test -x /usr/lib/cyrus/bin/httpd || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(CYRUS_PACKAGES); }
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install -q '.[bench]'
	$(BIN)/python -m bench --peer $(BENCH_ARGS)

# jmapd on PostgreSQL against SQLite, and two nodes against one
# (docs/benchmarks.md); starts a scratch PostgreSQL unless BENCH_ARGS has
# --db-url, e.g. make bench-nodes BENCH_ARGS="--messages 2000 --update-docs".
.PHONY: bench-nodes
bench-nodes: $(VENV)/.installed-test
	$(BIN)/python -m bench.nodes $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp*
