# Two entry points a fresh machine can run: `make test` and `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint demo bench bench-quick soak mutants deb rpm diagrams clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# Issue 11's figures against baselines of the same run (docs/performance.md). The daemon runs
# from a production install, built (or brought up to date) in .bench-venv/.
bench: $(STAMP)
	$(BIN)/python -m bench

# The same figures from smaller runs, in under a minute; writes nothing.
bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

# Thousands of random kills of the daemon and the SWLM (docs/reliability.md); SOAK_RUNS to change.
SOAK_RUNS ?= 3000
soak: $(STAMP)
	SOTA_SOAK_RUNS=$(SOAK_RUNS) $(BIN)/python -m pytest -q tests/e2e/test_crash.py -k random

# Removes each rule the code keeps, once, and checks that a test fails.
mutants: $(STAMP)
	$(BIN)/python tools/mutants.py

# The Debian and the RPM packages, into dist/ (docs/install.md#debian-and-rpm-packages). The
# wheels they bundle are fetched once into build/wheels; later builds take them from there.
deb: $(STAMP)
	$(BIN)/python -m tools.build_packages deb --out dist

rpm: $(STAMP)
	$(BIN)/python -m tools.build_packages rpm --out dist

# The diagrams of docs/diagrams/: update-states.dot from the journal's states and the transitions
# table of docs/reliability.md, then both .dot files rendered to SVG with graphviz's dot.
# python -m tools.diagrams --check says what is out of date and changes nothing.
diagrams: $(STAMP)
	$(BIN)/python -m tools.diagrams

clean:
	rm -rf $(VENV) .bench-venv .pytest_cache .mypy_cache .ruff_cache build dist
