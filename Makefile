# tradeflow — every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help install lock test-compat chromium screenshots console test test-under-load test-unit test-integration test-faults chaos chaos-short lint docs demo bench workers flower clean soak

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s "$$(printf '\t')"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,flower]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install tradeflow with its dev tools, at the versions pinned in constraints.txt

lock: $(STAMP)  ## upgrade .venv within pyproject's ranges and pin what it got in constraints.txt (then run the tests)
	$(BIN)/pip install --quiet --upgrade -e '.[dev,flower]'
	$(BIN)/python tools/lock.py

# The broker's contract tests (tests/contract) on both ends of the supported celery/kombu range:
# .venv-compat-low has the lowest (the other packages as pinned), .venv-compat-new the newest of everything.
COMPAT_LOW := celery==5.4.0 kombu==5.4.0

.venv-compat-low/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv .venv-compat-low
	.venv-compat-low/bin/pip install --quiet --upgrade pip
	grep -v -E '^(celery|kombu)==' constraints.txt > .venv-compat-low/constraints.txt
	.venv-compat-low/bin/pip install --quiet -c .venv-compat-low/constraints.txt -e '.[dev]' $(COMPAT_LOW)
	touch $@

.venv-compat-new/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv .venv-compat-new
	.venv-compat-new/bin/pip install --quiet --upgrade pip
	.venv-compat-new/bin/pip install --quiet --upgrade -e '.[dev]' celery kombu
	touch $@

test-compat: .venv-compat-low/.installed .venv-compat-new/.installed  ## the broker's contract tests on the lowest and the newest supported celery/kombu
	@for env in .venv-compat-low .venv-compat-new; do \
	  $$env/bin/python -c "import sys, celery, kombu, redis; print(sys.argv[1], 'celery', celery.__version__, 'kombu', kombu.__version__, 'redis', redis.__version__)" $$env; \
	  $$env/bin/pytest -q -p no:cacheprovider tests/contract || exit 1; \
	done

# Two pytest-xdist workers, each test module whole on one of them (its module-scoped fleet, console or browser
# starts once); every test has a key prefix, queues, ports and servers of its own (docs/testing.md).
test: $(STAMP) chromium  ## the whole suite (slow fault scenarios aside): unit, integration, browser, fast fault tests
	$(BIN)/pytest -q -m "not slow" -n 2 --dist loadfile tests

test-under-load: $(STAMP)  ## the same suite while busy-loop processes hold every core: outcomes must not depend on load
	$(BIN)/python -m tests.under_load -q -m "not slow" tests

chromium:  ## Debian's chromium for the console's browser tests (never a downloaded browser)
	@[ -x /usr/bin/chromium ] || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

screenshots: $(STAMP) chromium  ## refresh docs/screenshots from the console's browser tests
	TRADEFLOW_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(BIN)/pytest -q tests/integration/test_console_browser.py

test-unit: $(STAMP)  ## fast tests only (no Redis server, no workers)
	$(BIN)/pytest -q tests/unit

test-integration: $(STAMP)  ## tests on a real Redis with real Celery worker processes
	$(BIN)/pytest -q tests/integration

test-faults: $(STAMP)  ## every fault-injection scenario (kills, Redis restarts and outages): several minutes
	$(BIN)/pytest -q -m faults tests/faults

chaos: $(STAMP)  ## chaos soak: a morning run while workers and Redis are killed (CHAOS_SEED, CHAOS_DURATION=120, CHAOS_ACCOUNTS=2000, CHAOS_LAYOUT=services|default)
	$(BIN)/python -m tests.faults.chaos

chaos-short: $(STAMP)  ## the chaos soak's CI variant: 300 accounts, 20 s of chaos, under a minute
	$(BIN)/python -m tests.faults.chaos --short

soak: $(STAMP)  ## the year soak: 250 trading mornings on a private Redis; keys and memory must end where they started (several minutes)
	$(BIN)/python -m tests.faults.year_soak

lint: $(STAMP)  ## ruff
	$(BIN)/ruff check .

docs: $(STAMP)  ## the documentation site (docs/, mkdocs.yml) built into site/; any warning, a broken link or anchor included, fails it
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

demo: $(STAMP)  ## run the demo end to end (embedded Redis when none answers)
	$(BIN)/tradeflow demo

bench: $(STAMP)  ## engine vs bare Celery, morning (default layout, cold workers) vs the plain-script peer, Redis ceiling (capacity), memory, submission, starting
	$(BIN)/python -m bench $(BENCH_ARGS)

console: $(STAMP)  ## the web console on http://127.0.0.1:8000 (add users first: see docs/console.md)
	$(BIN)/tradeflow console

workers: $(STAMP)  ## start one combined solo worker per core and a low-priority filler per two (PROCESSES=N, FILLERS=M; every service queue) plus beat, in the foreground (Ctrl-C stops all)
	$(BIN)/tradeflow workers $(if $(PROCESSES),--processes $(PROCESSES)) $(if $(FILLERS),--fillers $(FILLERS))

flower: $(STAMP)  ## Flower on :5555 behind basic auth (FLOWER_BASIC_AUTH=user:password; FLOWER_NO_AUTH=1 to go without)
	@if [ -z "$$FLOWER_BASIC_AUTH" ] && [ "$$FLOWER_NO_AUTH" != "1" ]; then \
	  echo "refusing to start Flower without auth: set FLOWER_BASIC_AUTH=user:password (or FLOWER_NO_AUTH=1)" >&2; exit 2; fi
	$(BIN)/celery -A engine.worker flower --port=$${FLOWER_PORT:-5555} $${FLOWER_BASIC_AUTH:+--basic-auth=$$FLOWER_BASIC_AUTH}

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .venv-compat-low .venv-compat-new .pytest_cache .ruff_cache .hypothesis site
