"""Shared test configuration.

The helper modules beside this file (``paths``, ``studies``, ``closed_forms``, ``browser``,
``memory_limits``) are importable from every test folder (``pythonpath = ["tests"]`` in
pyproject.toml). Fixtures used by more than one folder live here.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

#: Test files that take minutes, started first: ``make test`` hands whole files to its workers
#: in collection order (``--dist loadfile --no-loadscope-reorder``: without the second flag
#: xdist sorts files by their number of tests, and the two-test notebook files, three minutes
#: together, started last), so the longest ones go out first and the short ones fill the cores
#: at the end instead of one long file running alone on a 2-core machine.
SLOW_FIRST = (
    "package/test_notebooks.py",
    "inference/test_inference.py",
    "inference/test_inference_temsirolimus.py",
    "inference/test_aggregate.py",
    "models/test_your_model_notebook.py",
    "models/test_blocks.py",
    "models/test_ode_model.py",
    "package/test_install.py",
    "inference/test_iov.py",
    "inference/test_iov_correlation.py",
    "inference/test_sbc.py",
    # files of one to two minutes, so that none of them is the last to start
    "models/test_temsirolimus_model.py",
    "report/test_report.py",
    "data/test_datasets.py",
    "pd/test_ode.py",
    "models/test_temsirolimus_iov.py",
    "pk/test_occasions.py",
    "inference/test_quick_fit.py",
    "pk/test_pk_nonlinear.py",
    "models/test_temsirolimus_binding.py",
    "simulate/test_simulate.py",
)


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}

    def key(item):
        try:
            rel = Path(str(item.path)).relative_to(here).as_posix()
        except ValueError:
            return len(rank)
        return rank.get(rel, len(rank))

    items.sort(key=key)  # stable: the order within a file and among the rest is kept


@pytest.fixture(autouse=True, scope="module")
def _registry_restored():
    """Models a test file registers (``pkpd.models.register``, a model file loaded by path) stay
    in that file: the registry is a process global and a worker runs many files one after
    another, so a registration left behind changed what a later file saw (the list of known
    models in an error message)."""
    from pkpd.models import MODELS

    before = dict(MODELS)
    yield
    MODELS.clear()
    MODELS.update(before)


@pytest.fixture(scope="session")
def one_cmt_iv_design():
    """A design maker: ``n`` subjects, one IV bolus of ``dose`` mg at 0 h, samples at ``times``
    (h) with DV 1.0 (a placeholder), and per-subject covariates ``covariates(i)`` (a dict).

    Returns a NONMEM-style :class:`pandas.DataFrame` (ID, TIME, EVID, AMT, DV, covariates).
    """

    def make(n, times, *, dose=100.0, covariates=lambda i: {"WT": 70.0}):
        rows = []
        for i in range(n):
            cov = covariates(i)
            rows.append(dict(ID=i + 1, TIME=0.0, EVID=1, AMT=dose, DV=float("nan"), **cov))
            rows += [dict(ID=i + 1, TIME=float(t), EVID=0, AMT=0.0, DV=1.0, **cov) for t in times]
        return pd.DataFrame(rows)

    return make
