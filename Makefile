# Two commands set everything up: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
CHECKPOINTS ?= checkpoints
TORCH_PIP_ARGS ?=
export OMP_NUM_THREADS ?= 2

.PHONY: install run test test-slow lint bench clean

$(BIN)/hegnn: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned, so no other package pulls a newer multi-GB build. Elsewhere,
	# TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cpu' picks the CPU wheel.
	$(BIN)/pip install --quiet torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/pip install --quiet -e '.[dev,xtb]'
	touch $(BIN)/hegnn

install: $(BIN)/hegnn

# Serves every checkpoint folder; the Dockerfile's CMD runs the same command.
run: install
	$(BIN)/hegnn serve --host $(HOST) --port $(PORT) --checkpoints $(CHECKPOINTS)

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: install
	$(BIN)/hegnn bench all --out benchmarks/results

clean:
	rm -rf $(VENV) .pytest_cache
