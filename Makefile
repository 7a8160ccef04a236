# The two set-up commands of the README: `make demo` (the main job on the embedded
# synthetic data) and `make test` (the test suite). Both create .venv themselves, installing
# through .ci/constraints.txt: the exact versions tested, whatever newer ones the index holds.
#
# The Python that makes .venv: PY=/path/to/python, or else the first of PYTHONS that runs and is
# 3.11 or newer (a pyenv shim of a version not selected is on PATH but does not run). 3.11 first:
# the constraints were frozen with it.
PYTHONS := python3.11 python3.12 python3.13
PY_OK := -c 'import sys; sys.exit(sys.version_info < (3, 11))'
ifeq ($(origin PY),undefined)
PY := $(firstword $(foreach p,$(PYTHONS),$(shell $(p) $(PY_OK) >/dev/null 2>&1 && echo $(p))))
endif
CONSTRAINTS := .ci/constraints.txt
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench report ui clean

venv: $(STAMP)

# pip and setuptools first, at their constrained versions: the package is then built with that
# setuptools (--no-build-isolation), not with whatever the index holds that day.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -n "$(PY)" && $(PY) $(PY_OK) >/dev/null 2>&1 || { echo "error: $(if $(PY),$(PY) does not run or is older than 3.11,none of $(PYTHONS) found); install Python 3.11-3.13 or run 'make PY=/path/to/python3.12'" >&2; exit 2; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) pip setuptools
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) --no-build-isolation -e '.[dev]'
	touch $(STAMP)

# The demo's report goes to out/demo/ (ignored by git), beside the committed reports/, never over them.
# Two runs at a time on one thread each: more runs per hour on 2 cores than one run on two
# threads (docs/performance.md, "Runs side by side").
demo: venv
	$(BIN)/python ablations/run.py --table 2 --jobs 2
	$(BIN)/python reports/build.py --table 2 --out out/demo
	@echo "the demo's report: out/demo/table2/README.md (the committed study's: reports/table2/README.md)"

# Two processes (pytest-xdist; CI has two cores): each worker takes the next test, and one that
# runs out of tests takes the other's last ones (worksteal). One torch thread each (tests/conftest.py).
test: venv lint
	$(BIN)/python -m pytest -q -n 2 --dist worksteal --durations=15

# The code's lint and format (pyproject.toml names the rules): `ruff format .` writes the format.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

report: venv
	$(BIN)/python reports/build.py --table 2

ui: venv
	$(BIN)/python -m ablations.ui

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
