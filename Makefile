# notetaker: the two commands a new machine needs are `make up` and `make test`.
# Each installs what it needs (uv, the locked Python packages, promtool) before it runs.

UV := python3 -m uv
PY := $(UV) run --frozen
ARGS ?=

.PHONY: up test lint typecheck pytest fuzz outages chaos mutation bench bench-ingest bench-upload deps tools clean

## make up: start the embedded stack, the five services and the provider simulator, and take
## a scheduled demo meeting to a stored recording with thumbnail. Ctrl-C stops everything.
up: deps
	$(PY) python -m notetaker.devstack.demo $(ARGS)

## make test: lint, type-check (strict) and the whole test suite.
test: deps tools lint typecheck pytest

lint:
	$(PY) ruff check .
	$(PY) ruff format --check .

typecheck:
	$(PY) mypy libs/common/src libs/cli/src libs/devstack/src services/ingest/src services/uploader/src \
		services/transcript-sync/src services/metrics/src services/scheduler/src bench tests

## The 20 slowest tests are listed at the end: the suite is kept under 15 minutes.
pytest:
	$(PY) pytest --durations=20

## make fuzz: the long form of the webhook fuzz in make test: NOTETAKER_FUZZ_EXAMPLES cases per
## operation and mode (300: over 1,000 signed requests past authentication), only 2xx and 4xx.
FUZZ_EXAMPLES ?= 300
fuzz: deps
	NOTETAKER_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) pytest -s -q \
		tests/ingest/test_openapi.py -k past_authentication

## make outages: the long form of the outage tests in make test: PostgreSQL gone, Kafka gone, S3
## answering 503, each for OUTAGE_SECONDS (60) while OUTAGE_MEETINGS (20) meetings flow; every meeting
## ends complete and nothing is dead-lettered.
OUTAGE_SECONDS ?= 60
OUTAGE_MEETINGS ?= 20
outages: deps
	NOTETAKER_OUTAGE_SECONDS=$(OUTAGE_SECONDS) NOTETAKER_OUTAGE_MEETINGS=$(OUTAGE_MEETINGS) \
		$(PY) pytest -q tests/outages

## make chaos: CHAOS_MEETINGS (50) meetings through every fault at once (kills, PostgreSQL, Kafka
## and S3 outages of CHAOS_OUTAGE_SECONDS, bad deliveries and sources, deletions), from a printed
## seed (CHAOS_SEED= replays a plan); prints the report and fails on any loss or duplicate.
## Recordings up to --max-mib (300: one of exactly that size); more options (--span, --kills): ARGS=...
CHAOS_MEETINGS ?= 50
CHAOS_OUTAGE_SECONDS ?= 30
CHAOS_SEED ?=
chaos: deps
	$(PY) python -m notetaker.devstack.chaos --meetings $(CHAOS_MEETINGS) \
		--outage-seconds $(CHAOS_OUTAGE_SECONDS) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) $(ARGS)

## make mutation: mutation testing (mutmut) of the modules that carry a promise, against the
## in-process unit tests only (no stack, no subprocess); prints mutants, killed, survived per
## module and fails on a survivor that docs/testing.md does not explain. mutmut names a module
## after its path, so the packages are staged under $(MUTATION_DIR)/src/notetaker first: from the
## work tree, or with MUTATION_REF=<commit> from that commit (its tests too).
MUTATION_DIR := .mutation
MUTATION_JOBS ?= 2
MUTATION_PACKAGES := libs/common/src/notetaker/common services/ingest/src/notetaker/ingest \
	services/uploader/src/notetaker/uploader services/transcript-sync/src/notetaker/transcript_sync \
	services/metrics/src/notetaker/metrics

mutation: deps
	rm -rf $(MUTATION_DIR)
	mkdir -p $(MUTATION_DIR)/tree $(MUTATION_DIR)/src/notetaker
ifdef MUTATION_REF
	git archive $(MUTATION_REF) $(MUTATION_PACKAGES) tests pyproject.toml | tar -x -C $(MUTATION_DIR)/tree
else
	cp -R --parents $(MUTATION_PACKAGES) tests pyproject.toml $(MUTATION_DIR)/tree/
endif
	for package in $(MUTATION_PACKAGES); do mv $(MUTATION_DIR)/tree/$$package $(MUTATION_DIR)/src/notetaker/; done
	mv $(MUTATION_DIR)/tree/tests $(MUTATION_DIR)/tree/pyproject.toml $(MUTATION_DIR)/
	rm -rf $(MUTATION_DIR)/tree
	@echo "mutmut run ($(MUTATION_JOBS) workers), log in $(MUTATION_DIR)/run.log"
	@start=$$(date +%s); \
	cd $(MUTATION_DIR) && $(CURDIR)/.venv/bin/mutmut run --max-children $(MUTATION_JOBS) >run.log 2>&1 \
		|| { tail -n 40 run.log; exit 1; }; \
	echo "took $$(( $$(date +%s) - start )) s"
	@cd $(MUTATION_DIR) && $(CURDIR)/.venv/bin/mutmut results --all true 2>/dev/null >results.txt
	@awk -F': ' ' \
		{ name = $$1; sub(/^ +/, "", name); status = $$2; module = name; \
		  sub(/\.x(_|ǁ).*$$/, "", module); modules[module] = 1; total[module]++; \
		  count[module, status]++; all[status]++; n++ } \
		END { printf "%-34s %7s %6s %8s %8s %7s %10s\n", "module", "mutants", "killed", \
		        "survived", "no tests", "timeout", "suspicious"; \
		      for (m in modules) printf "%-34s %7d %6d %8d %8d %7d %10d\n", m, total[m], \
		        count[m, "killed"], count[m, "survived"], count[m, "no tests"], \
		        count[m, "timeout"], count[m, "suspicious"] | "sort"; close("sort"); \
		      printf "%-34s %7d %6d %8d %8d %7d %10d\n", "total", n, all["killed"], \
		        all["survived"], all["no tests"], all["timeout"], all["suspicious"] }' \
		$(MUTATION_DIR)/results.txt
	@unexplained=0; \
	for mutant in $$(awk -F': ' '$$2 != "killed" { sub(/^ +/, "", $$1); print $$1 }' $(MUTATION_DIR)/results.txt); do \
		if grep -qF "$$mutant" docs/testing.md; then echo "  explained: $$mutant"; \
		else echo "  NOT EXPLAINED in docs/testing.md: $$mutant"; unexplained=1; fi; \
	done; \
	[ $$unexplained = 0 ] || { echo "see: cd $(MUTATION_DIR) && ../.venv/bin/mutmut show <mutant>"; exit 1; }

bench: deps
	$(PY) python -m bench.run $(ARGS)

deps:
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
	$(UV) sync --frozen --all-packages

# promtool checks the alert rules the chart ships, and the Prometheus server runs every dashboard
# and alert query against the pipeline (both from Debian's prometheus package).
tools:
	@{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || { \
		echo "installing promtool and prometheus (Debian package prometheus)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

clean:
	-$(PY) python -m notetaker.devstack.children
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache .notetaker
