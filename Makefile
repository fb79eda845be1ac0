# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test test-slow bench clean

# The virtualenv is rebuilt when pyproject.toml changes. torch is pinned <2.14 in pyproject.toml:
# on these machines that resolves to the CPU build on disk instead of a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.installed

## the Qilin-Med recipe (base -> cpt -> sft -> dpo) on the embedded default, with report
demo: setup
	$(BIN)/qilin run recipes/qilin-med.yaml

## the default (fast) test tier
test: setup
	$(BIN)/python -m pytest -q

## slow end-to-end tests (a whole recipe)
test-slow: setup
	$(BIN)/python -m pytest -q -m slow

## speed benchmarks (each prints its baseline, ours and the ratio)
bench: setup
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf runs .pytest_cache
