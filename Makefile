# make run : create .venv, install, train + evaluate + complete (with intervals) on the bundled BasicMotions data
# make test: create .venv, install, lint (ruff, settings in pyproject.toml), run the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch goes in first, so nothing pulls a multi-GB CUDA build; CUDA users install their torch into .venv first.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
CONFIG ?= configs/basicmotions.yaml
RUN_DIR ?= runs/basicmotions

.PHONY: run test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/tgatunet train --config $(CONFIG) --run-dir $(RUN_DIR) --overwrite
	$(VENV)/bin/tgatunet evaluate --run $(RUN_DIR)
	$(VENV)/bin/tgatunet complete --run $(RUN_DIR) --interval

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
