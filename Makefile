PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
PY := $(VENV)/bin/python
# Offline-safe defaults: never phone home, never fetch models at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DO_NOT_TRACK := 1
export UNSTRUCTURED_DISABLE_NOTICE := 1

.PHONY: setup test test-slow lint fmt demo dagster clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	# unstructured[pdf] drags in torchvision (via unstructured-inference -> timm) for
	# hi_res layout models Trove never uses; PyPI only has CUDA builds of it, whose
	# broken extension makes `transformers` (and so sentence-transformers) fail to
	# import next to the CPU torch. Remove it. See docs/dependencies.md.
	$(PIP) uninstall --quiet --yes torchvision
	touch $@

test: setup
	$(VENV)/bin/pytest -m "not slow" -q

test-slow: setup
	$(VENV)/bin/pytest -m slow -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

demo: setup
	$(VENV)/bin/trove demo

dagster: setup
	DAGSTER_HOME=$${DAGSTER_HOME:-$$PWD/.dagster_home} && mkdir -p $$DAGSTER_HOME && \
	cp -n dagster.yaml $$DAGSTER_HOME/dagster.yaml; \
	DAGSTER_HOME=$$DAGSTER_HOME $(VENV)/bin/dagster dev -w workspace.yaml

clean:
	rm -rf $(VENV) .trove .pytest_cache .ruff_cache
