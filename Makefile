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
	rm -rf $(VENV) $(LEROBOT_VENV) $(LEROBOT_TRAIN_VENV) .pytest_cache .ruff_cache

# The live LeRobot round trip (manual, not part of `make test`): a separate environment with LeRobot's dataset
# package (lerobot-dataset, = lerobot's datasets/) reusing flexwm's CPU torch through a .pth file (LeRobot pins
# torch < 2.11) and a torchvision stub (benchmarks/lerobot_stub). Runs benchmarks/lerobot_roundtrip.py, has
# LeRobot's writer write the fixtures afresh into runs/lerobot-fixtures and runs their flexwm tests on them.
# `make lerobot-fixtures` rewrites the committed ones in tests/fixtures/.
LEROBOT_VENV ?= .venv-lerobot
LEROBOT_DATASET_VERSION := 0.4.4
LRPY := $(LEROBOT_VENV)/bin/python
LRSTAMP := $(LEROBOT_VENV)/.lerobot-installed

.PHONY: lerobot-venv lerobot-roundtrip lerobot-fixtures
lerobot-venv: $(LRSTAMP)

$(LRSTAMP): $(STAMP)
	test -x $(LRPY) || $(PYTHON) -m venv $(LEROBOT_VENV)
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
	  > "$$($(LRPY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/zz_flexwm.pth"
	echo "$(CURDIR)/benchmarks/lerobot_stub" \
	  > "$$($(LRPY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/aa_stub.pth"
	$(LRPY) -m pip install --quiet --upgrade pip
	$(LRPY) -m pip install --quiet "lerobot-dataset==$(LEROBOT_DATASET_VERSION)"
	touch $@

lerobot-roundtrip: $(LRSTAMP)
	PYTHONPATH=$(CURDIR) $(LRPY) benchmarks/lerobot_roundtrip.py runs/lerobot-roundtrip
	$(LRPY) tests/fixtures/make_lerobot_fixtures.py runs/lerobot-fixtures
	FLEXWM_LEROBOT_FIXTURES=$(CURDIR)/runs/lerobot-fixtures $(PY) -m pytest -q -p no:xdist \
	  tests/data/test_data_lerobot_fixture.py

lerobot-fixtures: $(LRSTAMP)
	$(LRPY) tests/fixtures/make_lerobot_fixtures.py tests/fixtures

# LeRobot's `lerobot-train` on a dataset flexwm writes (manual, not part of `make test`): a second environment
# with the full lerobot 0.4.4 package. LeRobot pins torch < 2.11 and torchvision < 0.26, whose wheels pull CUDA
# torch, so torch==$(TORCH_VERSION) goes in first (the CPU wheel pip's find-links offer; no nvidia-* package may
# follow), then torchvision and lerobot without dependencies, then lerobot's other requirements as its metadata
# lists them (torchcodec left out: it needs FFmpeg's shared libraries and a build for the installed torch), with
# torch and torchvision held by a constraints file. A .pth file loads benchmarks/lerobot_train_compat (two
# environment shims for torchvision 0.28 next to a CPU torch). Runs benchmarks/lerobot_train.sh.
LEROBOT_TRAIN_VENV ?= .venv-lerobot-train
LEROBOT_VERSION := 0.4.4
LEROBOT_TORCHVISION_VERSION := 0.28.0
LTPY := $(LEROBOT_TRAIN_VENV)/bin/python
LTSTAMP := $(LEROBOT_TRAIN_VENV)/.lerobot-installed
# (re)written on every run, so the venv follows the checkout's path
LTPTH = printf '%s\nimport flexwm_lerobot_compat\n' "$(CURDIR)/benchmarks/lerobot_train_compat" \
  > "$$($(LTPY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/flexwm_lerobot_compat.pth"

.PHONY: lerobot-train-venv lerobot-train
lerobot-train-venv: $(LTSTAMP)

$(LTSTAMP):
	test -x $(LTPY) || $(PYTHON) -m venv $(LEROBOT_TRAIN_VENV)
	$(LTPY) -m pip install --quiet --upgrade pip
	$(LTPY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(LTPY) -m pip install --quiet --no-deps "torchvision==$(LEROBOT_TORCHVISION_VERSION)" "lerobot==$(LEROBOT_VERSION)"
	printf 'torch==%s\ntorchvision==%s\n' $(TORCH_VERSION) $(LEROBOT_TORCHVISION_VERSION) \
	  > $(LEROBOT_TRAIN_VENV)/constraints.txt
	$(LTPY) -c "import importlib.metadata as m, re; print('\n'.join(r.split(';')[0] for r in m.requires('lerobot') \
	  if 'extra ==' not in r and re.split('[^A-Za-z0-9_.-]', r)[0] not in ('torch', 'torchvision', 'torchcodec')))" \
	  > $(LEROBOT_TRAIN_VENV)/lerobot-requirements.txt
	$(LTPY) -m pip install --quiet -r $(LEROBOT_TRAIN_VENV)/lerobot-requirements.txt \
	  -c $(LEROBOT_TRAIN_VENV)/constraints.txt
	! $(LTPY) -m pip list 2>/dev/null | grep -i '^nvidia-'
	$(LTPTH)
	$(LTPY) -c "import torch, torchvision, lerobot.scripts.lerobot_train; print('lerobot-train env: torch', \
	  torch.__version__, 'torchvision', torchvision.__version__)"
	touch $@

lerobot-train: $(LTSTAMP) $(STAMP)
	$(LTPTH)
	benchmarks/lerobot_train.sh $(PY) $(LEROBOT_TRAIN_VENV) runs/lerobot-train

# regenerate docs/cli.md, docs/results/*.md and README.md's headline table from the code and benchmarks/results/
.PHONY: docs
docs: install
	$(PY) docs/gen.py
