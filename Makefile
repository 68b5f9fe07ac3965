# `make demo` and `make test` do all set-up themselves on a fresh machine (Python >= 3.10 with venv).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The PyTorch build this project is developed and tested against (served locally on the dev machines).
TORCH  ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test install clean stub

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# Train `scratch` and `ssat` on the bundled digits data with the same ViT and budget, each with the recipe the
# digits study chose for it on a validation split (docs/study.md), then compare.
demo: install
	rm -rf runs/demo
	$(PY) -m ssat train --config configs/demo.yaml --method scratch --mixup 0.2 --drop-path 0 --out runs/demo/scratch
	$(PY) -m ssat train --config configs/demo.yaml --method ssat --out runs/demo/ssat
	$(PY) -m ssat table runs/demo/scratch runs/demo/ssat

test: install
	$(PY) -m ruff check src tests benchmarks tools
	$(PY) -m pytest -q

# config.pyi, the typed view of Config (tests/test_config.py fails when it is out of date)
stub: install
	$(PY) tools/config_stub.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info .pytest_cache
