# The two commands: `make run` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test install lint format bench eval startup clean
# The django-stubs plugin imports the settings, which refuse to load without these URLs;
# nothing connects to them, so mypy runs on a machine with no servers.
MYPY := DATABASE_URL=postgres://mypy@localhost/mypy REDIS_URL=redis://localhost/0 $(VENV)/bin/mypy
# `make run` says what it does and how long each step took.
STEP = @echo "engram: $(1)..." && date +%s > $(VENV)/.step
DONE = @echo "engram: $(1): done in $$(( $$(date +%s) - $$(cat $(VENV)/.step) )) s"

$(STAMP): pyproject.toml
	@test -x $(PY) || { echo "engram: creating $(VENV) with $(PYTHON)" && $(PYTHON) -m venv $(VENV); }
	$(call STEP,installing (first run: a few minutes; pip shows its progress))
	$(PY) -m pip install --upgrade pip
	# torch first, pinned: the CPU wheel; anything unpinned would pull a CUDA build.
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[dev]"
	$(call DONE,installing)
	$(call STEP,exporting the embedding model to ONNX and int8 (the web server never loads torch))
	$(PY) -m memory.embeddings.prepare
	$(call DONE,exporting the embedding model)
	@rm -f $(VENV)/.step
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
	@$(PY) -m config.embedded.supervisor

# Lint and format, then the tests with the type check beside them: mypy is one process (78 s
# from a fresh clone), which before the tests left a core idle for as long; it runs while pytest
# starts, its report printed after the tests', and either failing fails `make test`. The admin's
# static files are collected first, as for `make run` (a fresh clone's tests otherwise warned 21
# times that WhiteNoise found no .engram/static/).
# pytest-xdist: one worker per core and one more (TEST_WORKERS=0 runs them in this process),
# each with a test database and a Redis database of its own. Many tests wait (a killed
# process restarted, a lease run out, a browser), so a third worker on two cores finishes
# sooner: pytest 800 and 755 s with two workers, 606 with three, 591 with four, run in turn
# on a slow day of this 2-core machine (calibration 5.3 ms), where two put CI at 16 minutes.
TEST_WORKERS ?= $(shell $(PYTHON) -c 'import os; print((os.cpu_count() or 1) + 1)')
test: $(STAMP) $(CHROMIUM) $(STATIC)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@mkdir -p .engram; $(MYPY) > .engram/mypy.log 2>&1 & types=$$!; \
	$(PY) -m pytest -n $(TEST_WORKERS) --maxprocesses 8 --dist loadgroup $(PYTEST_ARGS); \
	tests=$$?; wait $$types; typed=$$?; echo "mypy:"; cat .engram/mypy.log; \
	test $$tests -eq 0 && test $$typed -eq 0

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

startup: $(STAMP)
	$(PY) bench/bench_startup.py

clean:
	rm -rf $(VENV) .engram .mypy_cache
