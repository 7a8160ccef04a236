# The two set-up commands of the README: `make demo` (the main job on the embedded
# synthetic data) and `make test` (the test suite). Both create .venv themselves.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench report ui clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null 2>&1 || { echo "error: $(PY) not found; install Python 3.11 or run 'make PY=/path/to/python3.11'" >&2; exit 2; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The demo's report goes to out/demo/ (ignored by git), beside the committed reports/, never over them.
demo: venv
	$(BIN)/python ablations/run.py --table 2
	$(BIN)/python reports/build.py --table 2 --out out/demo
	@echo "the demo's report: out/demo/table2/README.md (the committed study's: reports/table2/README.md)"

test: venv
	$(BIN)/python -m pytest -q

report: venv
	$(BIN)/python reports/build.py --table 2

ui: venv
	$(BIN)/python -m ablations.ui

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
