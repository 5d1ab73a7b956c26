# notetaker: the two commands a new machine needs are `make up` and `make test`.
# Each installs what it needs (uv, the locked Python packages, promtool) before it runs.

UV := python3 -m uv
PY := $(UV) run --frozen
ARGS ?=

.PHONY: up test lint typecheck pytest bench bench-ingest bench-upload deps tools clean

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

pytest:
	$(PY) pytest

bench: deps
	$(PY) python -m bench.run $(ARGS)

deps:
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
	$(UV) sync --frozen --all-packages

# promtool checks the alert rules the chart ships (Debian's prometheus package).
tools:
	@command -v promtool >/dev/null 2>&1 || { \
		echo "installing promtool (Debian package prometheus)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

clean:
	-$(PY) python -m notetaker.devstack.children
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache .notetaker
