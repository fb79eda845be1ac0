# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup browser demo test test-slow bench clean

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
	@echo "Talk to the final model (chat page at http://127.0.0.1:8000/): $(BIN)/qilin serve --model runs/qilin-med/04-dpo/model --rag runs/qilin-med/06-rag/index"

# The chat page test drives Debian's Chromium (no browser download is possible here): installed when
# missing and running as root (CI); otherwise the test fails and names this target.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-noto-cjk; } \
	  || echo "make browser: run as root, or: sudo apt-get install -y chromium chromium-driver fonts-noto-cjk"

## the default (fast) test tier
test: setup browser
	$(BIN)/python -m pytest -q

## slow end-to-end tests (a whole recipe)
test-slow: setup
	$(BIN)/python -m pytest -q -m slow

## speed benchmarks (each prints its baseline, ours and the ratio)
bench: setup
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf runs .pytest_cache
