# The two commands: `make run` and `make test`.  Both create the virtual
# environment .venv and install the marketplace into it first.

PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
SOURCES = $(shell find marketplace clients twisted -name '*.py') schema.sql setup.cfg pyproject.toml

.PHONY: install run test clean

install: $(VENV)/.installed

$(VENV)/.installed: $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check '.[test]'
	@# refresh twisted's plugin cache, so twistd --help lists the plugins
	$(BIN)/python -c 'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))'
	touch $@

# Every service in the foreground on the embedded database (./var), until
# Ctrl-C or SIGTERM.
run: install
	$(BIN)/twistd --nodaemon --pidfile= marketplace

# The whole test suite, on its own throwaway embedded database.
test: install
	$(BIN)/python -m twisted.trial $(TRIAL_ARGS) tests

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp
