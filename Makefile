# The two commands: `make run` and `make test`.  Both create the virtual
# environment .venv and install the marketplace into it first.

PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
SOURCES = $(shell find marketplace clients twisted -name '*.py') schema.sql setup.cfg pyproject.toml

# Processes per service for `make run` and `make bench`: one per core.
WORKERS ?= $(shell nproc 2>/dev/null || echo 1)

.PHONY: install run test bench cluster reliability clean dev-certs backup backups restore rsync \
	postgresql-server

install: $(VENV)/.installed

# The marketplace with the extras of setup.cfg a target needs: none for the
# daemons, test and bench (whose report the tests check) for the tests,
# bench for the benchmark.  One stamp file per set.  With the backup extra,
# Barman too, without its dependencies: it asks for the psycopg2 package,
# which pip would build from source (a compiler and libpq's headers, absent
# from a fresh machine), while psycopg2-binary, installed with the
# marketplace, provides the same module; the backup extra lists its other
# dependency.
BARMAN = 'barman >= 3.16, < 4'
define install-with
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check '.$(1)'
	$(if $(findstring backup,$(1)),$(BIN)/pip install --quiet --disable-pip-version-check --no-deps $(BARMAN))
	@# refresh twisted's plugin cache, so twistd --help lists the plugins
	$(BIN)/python -c 'from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))'
	touch $@
endef

$(VENV)/.installed: $(SOURCES)
	$(call install-with,)

# (In a variable: a comma in $(call ...) would split the argument.)
TEST_EXTRAS = [test,bench,cluster,backup]
$(VENV)/.installed-test: $(SOURCES)
	$(call install-with,$(TEST_EXTRAS))

$(VENV)/.installed-backup: $(SOURCES)
	$(call install-with,[backup])

$(VENV)/.installed-bench: $(SOURCES)
	$(call install-with,[bench])

CLUSTER_EXTRAS = [cluster,bench,backup]
$(VENV)/.installed-cluster: $(SOURCES)
	$(call install-with,$(CLUSTER_EXTRAS))

# Loopback port of `make run`'s metrics and health checks (worker k: +k).
METRICS_PORT ?= 9180

# Every service in the foreground on the embedded database (./var), until
# Ctrl-C or SIGTERM; WORKERS processes share each service's port, and each
# serves /metrics, /health/live and /health/ready on METRICS_PORT + its number.
# A worker that dies is started again.  Once every worker serves, the
# daemon logs one "ready: ..." line naming the ports, the terminal programs
# and the marketplace-top command that watches them.  The daemon exits 0
# when asked to stop and 1 when it stops of a fault (a port in use, a worker
# that cannot start), so that make fails then.
run: install
	$(BIN)/twistd --nodaemon --pidfile= marketplace --workers=$(WORKERS) \
		--metrics=tcp:$(METRICS_PORT):interface=127.0.0.1

# The whole test suite, on its own throwaway embedded databases: trial
# spreads the tests over one process per core and one more, since the
# replicated cluster's test keeps one process for minutes, mostly waiting
# on its hosts (TRIAL_ARGS= for one process).
TRIAL_ARGS ?= -j$(shell expr $(WORKERS) + 1)
# The test modules, that cluster's test first: trial hands tests to its
# processes in the order named, and the longest one started last would
# run on alone after the others are done.
TESTS ?= tests.test_cluster $(filter-out tests.test_cluster,$(sort \
	$(basename $(subst /,.,$(wildcard tests/test_*.py)))))
test: $(VENV)/.installed-test
	@$(MAKE) --no-print-directory rsync || echo "(the restore test is skipped without rsync)"
	@[ "$$(id -u)" != 0 ] || $(MAKE) --no-print-directory postgresql-server \
		|| echo "(the cluster's test is skipped without Debian's PostgreSQL)"
	$(BIN)/python -m twisted.trial $(TRIAL_ARGS) $(TESTS)

# Backups of the embedded database (./var) with point-in-time recovery, by
# Barman (see docs/OPERATING.md, Backups): a full backup now; the backups
# and the oldest point a restore reaches; the data as it was at TO (an ISO
# time; the latest point without it), with the daemons stopped.
backup: $(VENV)/.installed-backup
	$(BIN)/marketplace-backup backup
backups: $(VENV)/.installed-backup
	$(BIN)/marketplace-backup list
restore: $(VENV)/.installed-backup rsync
	$(BIN)/marketplace-backup restore $(if $(TO),--to '$(TO)')

# Barman's restore copies with rsync, a Debian package: installed here if it
# is missing and we are root (as on a fresh machine), else asked for.
rsync:
	@command -v rsync >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -q && apt-get install -y -q rsync; } \
		|| { echo "rsync is needed for restores: apt-get install rsync"; exit 1; }

# The cluster's hosts run Debian's PostgreSQL (the embedded wheel's build has
# no TLS, and every link of the cluster is TLS): installed here if it is
# missing and we are root, else asked for.  Debian would also create and
# start a default server of its own (port 5432): a policy-rc.d that refuses
# every start, for the length of the install, keeps it stopped (an existing
# policy-rc.d is left as it is).
postgresql-server:
	@if ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
		echo "the cluster needs Debian's PostgreSQL: apt-get install postgresql"; exit 1; fi; \
	policy=/usr/sbin/policy-rc.d; made=; \
	if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' > $$policy && chmod 755 $$policy && made=1; fi; \
	apt-get update -q && apt-get install -y -q --no-install-recommends postgresql; status=$$?; \
	[ -z "$$made" ] || rm -f $$policy; exit $$status

# A development CA and a server certificate for localhost in ./certs (see
# marketplace/daemon/devcerts.py), for trying TLS out; never for production.
dev-certs: install
	$(BIN)/python -m marketplace.daemon.devcerts certs

# The benchmark of docs/PERFORMANCE.md: starts the marketplace on a
# throwaway embedded database on ports 9080-9082, runs marketplace-bench
# (scenarios 1+1, 10+10, 100+100; 1000 calls per client, 10 runs), measures
# the memory of 1000 idle connections.  Without BENCH_ARGS it rewrites the
# committed figures: the bench section of docs/PERFORMANCE.md and
# docs/bench/ (chart, results.json).  With BENCH_ARGS (a smoke run, another
# workload) the report goes to a folder of its own under bench-results/,
# unless BENCH_ARGS names --into (or --out).  To measure a running
# deployment instead: $(BIN)/marketplace-bench --seller EP --buyer EP.
BENCH_ARGS ?=
bench: $(VENV)/.installed-bench
	$(BIN)/marketplace-bench --launch --workers=$(WORKERS) --idle=1000 \
		$(if $(strip $(BENCH_ARGS)),,--into docs/PERFORMANCE.md) $(BENCH_ARGS)

# A replicated marketplace on this machine, in the foreground until Ctrl-C
# or SIGTERM (needs root): three PostgreSQL nodes under Patroni and etcd,
# two buyer, seller and payments daemons, each host a network namespace of
# its own (see marketplace/cluster/).  Files in ./var/cluster, kept by
# Ctrl-C: the next make cluster resumes the same cluster with its data.
cluster: $(VENV)/.installed-cluster postgresql-server
	$(BIN)/marketplace-cluster run

# The failure evaluation of docs/RELIABILITY.md (needs root): the four
# failures, a switchover and a rolling restart at 1+1, 10+10 and 100+100 on
# one cluster (its killed hosts started again after each run), then the
# whole-cluster restart check, and the no-failure runs on make run's deployment
# too (ports 9380-9382); rewrites docs/reliability/, the evaluation section
# of docs/RELIABILITY.md and the measured section of docs/SCALING.md.
RELIABILITY_ARGS ?=
reliability: $(VENV)/.installed-cluster postgresql-server
	$(BIN)/marketplace-cluster --dir var/evaluation evaluate --out docs/reliability \
		--into docs/RELIABILITY.md --scaling docs/SCALING.md $(RELIABILITY_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp
