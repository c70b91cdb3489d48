# Two entry points for a fresh machine (Python 3.11, nothing installed):
#   make demo   set up .venv and inspect a sample model
#   make test   set up .venv (with torchvision for the zoo-parity tests and the hf extra) and run the suite
PY     ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
# torch 2.13.0 is the CPU wheel on these machines (small, fast); torchvision needs 2.14.1.
TORCH_CPU ?= torch==2.13.0
TORCH_ZOO ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test venv zoo hf samples bench rules-docs clean browser

$(BIN)/python:
	$(PY) -m venv $(VENV)

venv: $(BIN)/python
	@$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_CPU)"
	$(PIP) install -e ".[dev]"

zoo: $(BIN)/python
	@$(BIN)/python -c "import torchvision" 2>/dev/null || $(PIP) install $(TORCH_ZOO)

# transformers + timm + safetensors: Hugging Face folders (dldoctor[hf]); the tests of load/hf_folder.py need them.
# accelerate + lightning (dldoctor[train]): the trainer callbacks of dldoctor/integrations and their tests
hf: venv
	@$(BIN)/python -c "import transformers, timm, safetensors, accelerate, lightning" 2>/dev/null || $(PIP) install -e ".[dev,hf,train]"

samples: venv
	$(BIN)/python sample_models/build.py --out sample_models/out

demo: samples
	$(BIN)/dldoctor inspect sample_models/out/resnet_small.pt --code sample_models.zoo --input-shape 1,3,64,64

# Debian's chromium lets the HTML report's browser test run (it skips without one); never fatal.
browser:
	@command -v chromium >/dev/null 2>&1 || apt-get install -y -q chromium >/dev/null 2>&1 || echo "chromium not installed: the headless-browser test will skip"

test: zoo venv hf browser
	$(BIN)/python -m pytest -q -ra

bench: zoo venv
	$(PIP) install -e ".[bench]"
	$(BIN)/python benchmarks/flops_vs_peers.py --out docs/benchmarks.md
	$(BIN)/python benchmarks/zoo_findings.py --out docs/benchmarks.md
	$(BIN)/python benchmarks/check_speed.py --out docs/benchmarks.md
	$(BIN)/python benchmarks/check_scale.py --files 300 --out docs/benchmarks.md
	$(BIN)/python benchmarks/large_models.py --out docs/benchmarks.md
	$(BIN)/python benchmarks/memory_vs_profiler.py --out docs/benchmarks.md
	$(BIN)/python benchmarks/probe_bench.py --out docs/benchmarks.md
	$(BIN)/python benchmarks/profile_bench.py --out docs/benchmarks.md
	$(BIN)/python benchmarks/compress_bench.py --out docs/benchmarks.md
	$(BIN)/python benchmarks/hf_folders.py --out docs/benchmarks.md
	$(BIN)/python benchmarks/startup.py --out docs/benchmarks.md

# regenerate rules/*.md and the coverage matrix from the registry (a test fails when they are stale)
rules-docs: venv
	$(BIN)/python -m dldoctor.rules.docs

clean:
	rm -rf $(VENV) sample_models/out .pytest_cache
