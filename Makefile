# Two commands set everything up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned to the CPU wheel these machines carry; a plain `torch` may pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions

.PHONY: install demo test bench clean

$(BIN)/afsd:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q --no-build-isolation -e ".[test]"

install: $(BIN)/afsd

demo: $(BIN)/afsd
	$(BIN)/python -m afsd_cli.demo

test: $(BIN)/afsd
	$(BIN)/python -m pytest -q tests

bench: $(BIN)/afsd
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .cache runs build *.egg-info
