# The README's contract: `make demo` runs the main job, `make test` runs the tests.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PINS := torch==2.14.1 torchvision==0.29.1
# the optional extras are installed for the tests: they run against the real packages
EXTRAS := data+test+lint+dataset+integrations+ray+text

.PHONY: demo test lint docs benchmark clean

$(VENV)/.installed-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(PINS) -e ".[$(subst +,$(comma),$*)]"
	touch $@

comma := ,

demo: $(VENV)/.installed-$(EXTRAS)
	$(PY) -m captum_uncertainty demo --out out/demo

test: $(VENV)/.installed-$(EXTRAS)
	$(PY) -m pytest -q

# ruff (lint and format) and mypy, configured in pyproject.toml
lint: $(VENV)/.installed-$(EXTRAS)
	$(VENV)/bin/ruff check captum_uncertainty tests benchmarks tutorials docs
	$(VENV)/bin/ruff format --check captum_uncertainty tests benchmarks tutorials docs
	$(VENV)/bin/mypy

docs: $(VENV)/.installed-$(EXTRAS)+docs
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

benchmark: $(VENV)/.installed-$(EXTRAS)
	$(PY) -m captum_uncertainty benchmark --out out/benchmark

clean:
	rm -rf out docs/_build docs/auto_tutorials
