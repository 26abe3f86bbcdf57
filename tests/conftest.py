"""Shared test configuration.

The helper modules beside this file (``paths``, ``studies``, ``closed_forms``, ``browser``,
``memory_limits``) are importable from every test folder (``pythonpath = ["tests"]`` in
pyproject.toml). Fixtures used by more than one folder live here.
"""

from __future__ import annotations

import pandas as pd
import pytest


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
