# Two commands: `make demo` and `make test`. Both set up first (idempotent, fast when done).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export R_LIBS := $(CURDIR)/$(VENV)/Rlib
export CONVNETVAE_PYTHON := $(CURDIR)/$(VENV)/bin/python
export RETICULATE_PYTHON := $(CURDIR)/$(VENV)/bin/python
OUT ?= demo_output

.PHONY: setup demo test test-python test-r test-vignette clean

setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m convnetvae.cli demo --out $(OUT)
	@if [ -f R/RunConvNetVAE.R ]; then Rscript scripts/demo.R $(OUT); fi

test: setup
	bash scripts/run_tests.sh

clean:
	rm -rf $(VENV) $(OUT) test-output
