# Two commands are all the set-up there is: `make demo` and `make test` create .venv and
# install what they need when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pkpd-installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Until the fit -> simulate -> report pipeline (`pkpd demo`) lands: check the bundled data.
demo: $(STAMP)
	$(VENV)/bin/pkpd validate datasets/temsirolimus/temsirolimus.csv
	$(VENV)/bin/pkpd validate datasets/examples/two_studies.csv

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_pk.py

lint: $(STAMP)
	$(VENV)/bin/ruff check pkpd tests benchmarks
	$(VENV)/bin/ruff format --check pkpd tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
