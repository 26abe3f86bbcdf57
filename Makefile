# Two commands are all the set-up there is: `make demo` and `make test` create .venv and
# install what they need when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pkpd-installed

.PHONY: demo test docs lint bench clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# validate -> fit -> simulate -> report on the bundled data; prints where the report is.
demo: $(STAMP)
	$(VENV)/bin/pkpd demo --out pkpd_demo

# The report's rendering test opens it in headless Chromium: install Debian's package where
# this is root with apt; elsewhere that one test is skipped (the HTML checks still run).
# Test files run in parallel, one worker per core (at most 4), each file on one worker so its
# module fixtures are built once, in the order tests/conftest.py gives (longest first; xdist
# would otherwise reorder files by their number of tests and start the two-test notebook
# files last, each alone on a core for minutes).
test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends chromium; } >/dev/null 2>&1; } \
	  || echo "chromium not installed: the report's rendering test will be skipped"
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist loadfile --no-loadscope-reorder

# The documentation site (Sphinx): build/docs/html/index.html. The tutorials are the notebooks,
# run with their small settings (a few minutes); `docs/build.py --execute off` skips running them.
docs: $(STAMP)
	$(PY) docs/build.py --out build/docs

# Issue 9's tables, each measured side by side in one run: (c) simulation vs a scipy loop,
# (d) gradient vs subjects, (a, b) NUTS ESS/s vs Stan (pystan, the `bench` extra; ~1 h).
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) benchmarks/bench_pk.py
	$(PY) benchmarks/bench_grad.py
	$(PY) benchmarks/bench_fit.py

lint: $(STAMP)
	$(VENV)/bin/ruff check pkpd tests benchmarks docs
	$(VENV)/bin/ruff format --check pkpd tests benchmarks docs

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
