# `make run` and `make test` work on a machine with only Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-compose lint install clean

$(BIN)/python:
	@echo "installing nnserve and its dependencies into $(VENV) (the first time: a few minutes)"
	$(PYTHON) -m venv $(VENV)
	# -qq: errors only; a machine's own pip configuration (an index folder it lacks, say) would
	# otherwise print warnings among the lines before nnserve's banner.
	$(BIN)/python -m pip install -qq --disable-pip-version-check 'uv>=0.9,<1'

# uv installs the same packages from PyPI as pip, several times faster (TensorFlow and Prefect
# are large). Reinstall only when the dependency list changes. Unlike pip, uv does not compile
# bytecode unless asked, and where PYTHONDONTWRITEBYTECODE is set (as on CI machines) Python never
# caches it either: every process would then compile TensorFlow's sources anew, 24 s instead of 8.
RUN_STAMP := $(VENV)/.installed-run
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[serving,pipeline]'
	touch $@

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e '.[serving,pipeline,test]'
	touch $@ $(RUN_STAMP)

# checkov pins packages that clash with Prefect's (packaging<24, cachetools<6): it gets a venv of
# its own, which tests/deploy finds at .venv/tools/checkov.
CHECKOV := $(VENV)/tools/checkov/bin/checkov
$(CHECKOV): | $(BIN)/python
	$(PYTHON) -m venv --without-pip $(VENV)/tools/checkov
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(VENV)/tools/checkov/bin/python 'checkov==3.3.30'

# The demo page's browser test drives Debian's chromium. Best effort: where apt cannot install it
# (not root, no apt, no mirror), that one test skips and says why.
BROWSER := $(VENV)/.browser-checked
$(BROWSER): | $(BIN)/python
	-command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; }
	touch $@

install: $(STAMP)

# Quiet: what `make run` shows is nnserve's own progress, not the commands that install it.
.SILENT: $(BIN)/python $(RUN_STAMP) run
run: $(RUN_STAMP)
	$(BIN)/nnserve up

# Two pytest-xdist workers: most tests wait on the servers and training runs they start, so one
# pytest process leaves the second core idle. A test file runs whole on one worker (loadfile), so
# its module fixtures (servers, trained models) start once; tests/conftest.py keeps the
# directories whose session fixtures are costly on one worker too.
test: $(STAMP) $(CHECKOV) $(BROWSER)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadfile

# The whole system under a real Docker engine: `docker compose up` with compose.yaml and the
# stand-ins' override (docker/standins/), then tests/compose. scripts/docker-engine.sh installs and
# starts the engine where it can (root, apt-get); where it cannot (exit 3) the target says so and
# passes, except under CI=true, where it fails.
test-compose: $(STAMP)
	@scripts/docker-engine.sh; status=$$?; \
	if [ $$status = 3 ] && [ "$${CI:-}" != true ]; then \
		echo "test-compose: SKIPPED: no Docker engine can be started here (see above)"; exit 0; \
	elif [ $$status != 0 ]; then exit $$status; fi; \
	docker/standins/build.sh && \
	$(BIN)/python -m pytest -x tests/compose

lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache
