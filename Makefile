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

setup: data

demo: setup
	$(PY) recipes/demo.py --data $(DATA_DIR)

test: setup
	METANLP_DATA_DIR=$(abspath $(DATA_DIR)) $(PY) -m pytest -q tests

# The general learner (issue 17): BIG-bench task families (downloads the 358 MB sdist once), then
# meta-training on the broad task distribution; under an hour on 2 CPU cores.
general: setup
	$(PY) data_scripts/build_bigbench.py --out $(DATA_DIR) --download --families
	$(PY) recipes/general_learner.py --data $(DATA_DIR)

lint: install
	$(VENV)/bin/ruff check metanlp tests data_scripts recipes benchmarks

clean-data:
	rm -rf $(DATA_DIR)

# Peers (learn2learn, SetFit, TorchOpt, higher) live only in the benchmarks' own venv.
.PHONY: bench-env
bench-env:
	bash benchmarks/setup_env.sh
