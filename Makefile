# flexwm: `make demo` and `make test` are the two commands a newcomer needs.
# Both create .venv, install torch==2.13.0 first and pinned (CUDA build when an NVIDIA GPU is present,
# CPU build otherwise), then flexwm with all extras.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.flexwm-installed
TORCH_VERSION := 2.13.0
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)

export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo demo-checkpoint checkpoint-avdc11 test test-fast lint bench bench-gpu bench-collect clean browser

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
ifeq ($(HAS_GPU),1)
	@echo "NVIDIA GPU found: installing the CUDA build of torch==$(TORCH_VERSION)"
	PIP_FIND_LINKS= $(PIP) install --quiet "torch==$(TORCH_VERSION)"
else
	$(PIP) install --quiet "torch==$(TORCH_VERSION)"
endif
	$(PIP) install --quiet -e ".[all]"
	$(PY) -c "import torch, flexwm; print('flexwm', flexwm.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
	touch $(STAMP)

demo: install
	$(VENV)/bin/flexwm demo --out runs/demo

# reproduce the checkpoint shipped in flexwm/assets/demo (collect + train with the demo preset, ~15 min on 2 cores)
demo-checkpoint: install
	$(VENV)/bin/flexwm demo --train --out runs/demo-train
	$(VENV)/bin/flexwm export-demo runs/demo-train/model

# reproduce checkpoints/avdc11-cpu (collect the 11 AVDC tasks, train the flexible model 8000 x 32, export; about
# 90 minutes on 2 uncontended CPU cores; every stage resumes). Its recipe: checkpoints/avdc11-cpu/RECIPE.md
checkpoint-avdc11: install
	bash checkpoints/recipes/avdc11-cpu.sh

test: install browser
	$(VENV)/bin/python -m pytest -n 2 --dist loadfile -q

# Debian's chromium for the report's browser test; skipped (the test then says so) where apt is unavailable
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	     chromium >/dev/null) ; } || echo "note: chromium not installed; the report browser test will be skipped"

test-fast: install
	$(VENV)/bin/python -m pytest -n 2 -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check flexwm tests benchmarks

# the headline benchmark: flexible vs wam-only vs ac-only (+ behaviour cloning) on the same data and compute;
# collects data/avdc if missing, resumes every stage (hours on 2 CPU cores; see README "Headline benchmark")
bench: install
	$(VENV)/bin/python benchmarks/bench.py --preset cpu --data data/avdc --prefix runs/bench-cpu

bench-gpu: install
	$(VENV)/bin/python benchmarks/bench.py --preset gpu --data data/avdc --prefix runs/bench-gpu --jobs 4

bench-collect: install
	$(VENV)/bin/python benchmarks/collect.py --out benchmarks/results/collect.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

# regenerate docs/cli.md, docs/results/*.md and README.md's headline table from the code and benchmarks/results/
.PHONY: docs
docs: install
	$(PY) docs/gen.py
