# The two commands: `make run` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test install lint format bench eval clean
# The django-stubs plugin imports the settings, which refuse to load without these URLs;
# nothing connects to them, so mypy runs on a machine with no servers.
MYPY := DATABASE_URL=postgres://mypy@localhost/mypy REDIS_URL=redis://localhost/0 $(VENV)/bin/mypy

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: the CPU wheel; anything unpinned would pull a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

# The admin's CSS and JS, collected into STATIC_ROOT (.engram/static) for WhiteNoise to serve;
# again whenever a static file of the project changes. No server is needed, so none is started.
STATIC := .engram/.static-collected
STATIC_SOURCES := $(shell find . \( -path ./.venv -o -path ./.engram -o -path ./.git \) -prune -o -path '*/static/*' -type f -print 2>/dev/null)
$(STATIC): $(STAMP) $(STATIC_SOURCES)
	DATABASE_URL=postgres://collectstatic@localhost/none REDIS_URL=redis://localhost/0 \
		$(PY) manage.py collectstatic --noinput -v0
	mkdir -p $(@D) && touch $@

install: $(STAMP) $(STATIC)

# The browser tests drive Debian's Chromium; Playwright's own browser download is unreachable.
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	apt-get install -y chromium || (apt-get update && apt-get install -y chromium)

run: $(STAMP) $(STATIC)
	$(PY) -m config.embedded.supervisor

# Lint, format, types, then the tests; the first failure stops it.
test: lint $(CHROMIUM)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(MYPY)

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(PY) bench/run_all.py

eval: $(STAMP)
	$(PY) bench/eval_locomo.py

clean:
	rm -rf $(VENV) .engram .mypy_cache
