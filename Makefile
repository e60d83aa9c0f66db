# daskmeta: `make demo` runs the reference meta-analysis, `make test` the whole test suite.
# Both create .venv with `python3 -m venv` when missing and install the project into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.daskmeta-installed

.PHONY: demo test test-fast lint notebooks bench bench-nimare clean

# deploy/constraints.txt pins the runtime dependencies: the client and the cluster image match.
$(STAMP): pyproject.toml deploy/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c deploy/constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/daskmeta demo

test: $(STAMP)
	$(BIN)/ruff check daskmeta tests benchmarks deploy
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

# Execute notebooks/*.ipynb as tests/test_notebooks.py does and write them back with their outputs.
notebooks: $(STAMP)
	DASKMETA_WRITE_NOTEBOOKS=1 $(BIN)/pytest -q -p no:cacheprovider tests/test_notebooks.py -k "walkthrough or sweep"

lint: $(STAMP)
	$(BIN)/ruff check daskmeta tests benchmarks deploy

bench: $(STAMP)
	$(BIN)/python benchmarks/permutations.py
	$(BIN)/python benchmarks/cluster_null.py
	$(BIN)/python benchmarks/sweep.py
	$(BIN)/python benchmarks/uncorrected_precision.py

# NiMARE would downgrade nilearn in .venv: it gets its own environment beside daskmeta.
bench-nimare:
	test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet --disable-pip-version-check -e . 'nimare==0.22.1'
	.venv-bench/bin/python benchmarks/nimare_compare.py

clean:
	rm -rf $(VENV) .venv-bench zarr_store/*.zarr results
