# `make demo` and `make test` work on a fresh machine with only python3 (3.11+) and make:
# they create .venv, install the package with its test extras, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint browser-deps emulator clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (nbhelpers)" >/dev/null
	touch $(STAMP)

## Runs the whole suite through the batch runner against the local emulator; executed notebooks
## and the report land in runs/<run-id>/.
demo: $(STAMP)
	$(BIN)/python -m nbhelpers run

## Lint, unit tests, emulator-backed SDK tests, notebooks under papermill, then nbval over the
## notebooks with the emulator chosen through the environment (a throwaway state dir and token).
test: $(STAMP) lint browser-deps
	$(BIN)/python -m pytest -q
	state=$$(mktemp -d) && NBHELPERS_BACKEND=emulator NBHELPERS_STATE_DIR=$$state \
	  NBHELPERS_RUN_ID=nbval HF_TOKEN=hf_rehearsalOnlyNotARealToken NBHELPERS_EMULATOR_URL= \
	  $(BIN)/python -m pytest -q --nbval-lax -p no:cacheprovider notebooks; \
	  status=$$?; rm -rf $$state; exit $$status

## Debian's Chromium for the browser tests (Playwright drives it; no browser download).
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	  else echo "chromium is missing and this is not root: the browser tests will be skipped"; fi; \
	fi

## ruff, the import contracts of pyproject.toml (the architecture), mypy over nbhelpers/, and
## the notebooks' own rules.
lint: $(STAMP)
	$(BIN)/ruff check nbhelpers tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/python -m nbhelpers check-notebooks notebooks

## Serves the emulator on 127.0.0.1:8765 until stopped.
emulator: $(STAMP)
	$(BIN)/python -m nbhelpers emulator --host 127.0.0.1 --port 8765

clean:
	rm -rf $(VENV) runs .pytest_cache
