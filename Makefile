# Two commands set everything up: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
CHECKPOINTS ?= checkpoints
TORCH_PIP_ARGS ?=
export OMP_NUM_THREADS ?= 2

.PHONY: install run test test-slow lint bench clean install-scale run-ray test-ray

$(BIN)/hegnn: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned, so no other package pulls a newer multi-GB build. Elsewhere,
	# TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cpu' picks the CPU wheel.
	$(BIN)/pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/pip install --quiet -e '.[all]'
	touch $(BIN)/hegnn

install: $(BIN)/hegnn

# Serves every checkpoint folder; the Dockerfile's CMD runs the same command.
run: install
	$(BIN)/hegnn serve --host $(HOST) --port $(PORT) --checkpoints $(CHECKPOINTS)

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

# Ray Serve (deploy/ray/, README "Scaling out"): the `scale` extra, not in `install`.
install-scale: install
	$(BIN)/pip install --quiet -e '.[scale]'

# One machine, on loopback: RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray on 127.0.0.1
# (otherwise it binds the routable address). The proxy listens on 8000, as `make run`.
run-ray: install-scale
	RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 PYTHONPATH=$(CURDIR) \
	  $(BIN)/serve run deploy/ray/serve.yaml

# A local Ray cluster: 2 replicas = 1 process, a replica killed under load, autoscaling,
# GPU placement on simulated nodes (about 3 min on 2 cores; Ray is stopped afterwards).
test-ray: install-scale
	$(BIN)/python -m pytest -q -s -m slow tests/deploy/test_ray.py tests/deploy/test_ray_gpu.py

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/hegnn bench all --out benchmarks/results

clean:
	rm -rf $(VENV) .pytest_cache
