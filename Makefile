# The two commands: `make run` and `make test`.  Both create the virtual
# environment .venv and install the marketplace into it first.

PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
SOURCES = $(shell find marketplace clients twisted -name '*.py') schema.sql setup.cfg pyproject.toml

# Processes per service for `make run` and `make bench`: one per core.
WORKERS ?= $(shell nproc 2>/dev/null || echo 1)

.PHONY: install run test bench clean dev-certs

install: $(VENV)/.installed

$(VENV)/.installed: $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check '.[test]'
	@# refresh twisted's plugin cache, so twistd --help lists the plugins
	$(BIN)/python -c 'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))'
	touch $@

# Every service in the foreground on the embedded database (./var), until
# Ctrl-C or SIGTERM; WORKERS processes share each service's port.
run: install
	$(BIN)/twistd --nodaemon --pidfile= marketplace --workers=$(WORKERS)

# The whole test suite, on its own throwaway embedded database.
test: install
	$(BIN)/python -m twisted.trial $(TRIAL_ARGS) tests

# A development CA and a server certificate for localhost in ./certs (see
# marketplace/devcerts.py), for trying TLS out; never for production.
dev-certs: install
	$(BIN)/python -m marketplace.devcerts certs

# The benchmark of docs/PERFORMANCE.md: starts the marketplace on a
# throwaway embedded database on ports 9080-9082, runs marketplace-bench
# (scenarios 1+1, 10+10, 100+100; 1000 calls per client, 10 runs), measures
# the memory of 1000 idle connections, and rewrites the bench section of
# docs/PERFORMANCE.md and docs/bench/ (chart, results.json).  To measure a
# running deployment instead: $(BIN)/marketplace-bench --seller EP --buyer EP.
BENCH_ARGS ?=
bench: install
	$(BIN)/marketplace-bench --launch --workers=$(WORKERS) --idle=1000 \
		--out docs/bench --into docs/PERFORMANCE.md $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp
