# The README's two commands: `make demo` and `make test`. Both set everything up first.
VENV := .venv
STAMP := $(VENV)/.vlml-installed

.PHONY: setup demo test test-unit test-all lint bench

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vlml demo --out demo-out

# unit + integration tiers (CI, the README's test command)
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow"

# the inner loop: the unit tier alone (under 90 s)
test-unit: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow and not integration"

# every tier, slow tests included
test-all: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(VENV)/bin/python $$b; done
