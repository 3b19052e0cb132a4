# The two commands: `make run` (the service) and `make test` (the whole suite). `make bench` and
# `make lock` (refresh requirements/*.lock after changing setup.cfg's dependencies) on demand.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
LOCKED := $(VENV)/.locked
# `make run`, `make test` and CI install this; `make bench` the same plus the bench extra.
LOCK := requirements/test.lock
BENCH_LOCK := requirements/bench.lock
UV_COMPILE := $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock"
# The page's one browser dependency (@telnyx/webrtc, pinned in package-lock.json).
WEBRTC_SDK := node_modules/@telnyx/webrtc/lib/bundle.mjs

.PHONY: run test test-fast lint format bench screenshots lock clean

# Python may keep the bytecode it compiles (in the ignored __pycache__/): with
# PYTHONDONTWRITEBYTECODE set, as on some machines, every run compiled and assertion-rewrote every
# test module again, some ten seconds of each test run and of each test process.
unexport PYTHONDONTWRITEBYTECODE

# Every Python package comes from the lock, at its exact version, its hash checked; then the
# project itself, editable (code changes need no reinstall) and built with the locked setuptools.
$(LOCKED): $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "telnyx-flask needs Python 3.11 or newer (found $$($(PYTHON) --version)); set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK) || { echo "pip install failed: see the messages above"; exit 1; }
	touch $@

$(INSTALLED): $(LOCKED) setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e . || { echo "pip install failed: see the messages above"; exit 1; }
	@$(BIN)/python -m pip check >/dev/null || { $(BIN)/python -m pip check; \
		echo "setup.cfg needs packages $(LOCK) lacks: run make lock"; exit 1; }
	touch $@

# Re-resolve the locks from setup.cfg and requirements/tools.in on PyPI, keeping every pin that
# still fits; `make lock UPGRADE=1` moves everything to the newest versions allowed. Resolved for
# any platform and Python >= 3.11, with the hashes of every file of each pinned release.
lock: $(LOCKED)
	$(UV_COMPILE) $(if $(UPGRADE),--upgrade) --extra test --extra embedded \
		setup.cfg requirements/tools.in -o $(LOCK)
	$(UV_COMPILE) $(if $(UPGRADE),--upgrade) --extra test --extra embedded --extra bench \
		--constraint $(LOCK) setup.cfg requirements/tools.in -o $(BENCH_LOCK)

$(WEBRTC_SDK): package.json package-lock.json
	@if command -v npm >/dev/null; then npm ci --no-audit --no-fund --ignore-scripts && touch $@; \
	else echo "npm not found: the page will run without in-browser audio (install Node.js 20+)"; fi

# Development mode; DATABASE_URL / REDIS_URL when set, embedded servers otherwise (devserver.py).
run: $(INSTALLED) $(WEBRTC_SDK)
	$(BIN)/python -m telnyx_flask.devserver

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint $(WEBRTC_SDK)
	$(BIN)/pytest

# The tier to run before each commit: everything that needs no gunicorn, browser or fresh venv.
test-fast: lint
	$(BIN)/pytest -q -n 2 -m "not browser and not gunicorn and not slow and not ha and not prometheus"

bench: $(INSTALLED)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(BENCH_LOCK)
	$(BIN)/python bench/webhook_throughput.py
	$(BIN)/python bench/ring_latency.py
	$(BIN)/python bench/caller_context.py
	$(BIN)/python bench/supervisor_reports.py

# Re-take docs/screenshots/*.png from the browser test that walks through a call.
screenshots: $(INSTALLED) $(WEBRTC_SDK)
	SCREENSHOT_DIR=$(CURDIR) $(BIN)/pytest -q tests/test_page.py tests/test_supervisor_page.py \
		-k "both_see_it_in_history or busy_day"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis *.egg-info build dist
