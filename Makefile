# The two commands: `make run` (the service) and `make test` (the whole suite). `make bench` on demand.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The page's one browser dependency (@telnyx/webrtc, pinned in package-lock.json).
WEBRTC_SDK := node_modules/@telnyx/webrtc/lib/bundle.mjs

.PHONY: run test test-fast lint format bench screenshots clean

$(INSTALLED): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "telnyx-flask needs Python 3.11 or newer (found $$($(PYTHON) --version)); set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,embedded]' || { echo "pip install failed: see the messages above"; exit 1; }
	touch $@

$(WEBRTC_SDK): package.json package-lock.json
	@if command -v npm >/dev/null; then npm ci --no-audit --no-fund --ignore-scripts && touch $@; \
	else echo "npm not found: the page will run without in-browser audio (install Node.js 20+)"; fi

# Development mode; DATABASE_URL / REDIS_URL when set, embedded servers otherwise (devserver.py).
run: $(INSTALLED) $(WEBRTC_SDK)
	$(BIN)/python -m telnyx_flask.devserver

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(INSTALLED)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint $(WEBRTC_SDK)
	$(BIN)/pytest

# The tier to run before each commit: everything that needs no gunicorn, browser or fresh venv.
test-fast: lint
	$(BIN)/pytest -q -m "not browser and not gunicorn and not slow"

bench: $(INSTALLED)
	$(BIN)/pip install --quiet -e '.[test,embedded,bench]'
	$(BIN)/python bench/webhook_throughput.py
	$(BIN)/python bench/ring_latency.py

# Re-take docs/screenshots/*.png from the browser test that walks through a call.
screenshots: $(INSTALLED) $(WEBRTC_SDK)
	SCREENSHOT_DIR=$(CURDIR) $(BIN)/pytest -q tests/test_page.py -k both_see_it_in_history

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis *.egg-info
