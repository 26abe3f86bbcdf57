"""`pkpd fit` end to end: the table it prints, the file it writes, bad input exits 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.cli import main
from pkpd.inference.summary import parameter_table


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    rng = np.random.default_rng(3)
    rows = []
    for i in range(12):
        wt = float(rng.uniform(50, 100))
        cl, v = (
            2.0 * (wt / 70) ** 0.75 * np.exp(rng.normal(0, 0.2)),
            30.0 * np.exp(rng.normal(0, 0.1)),
        )
        rows.append(dict(ID=i + 1, TIME=0.0, EVID=1, AMT=100.0, DV=".", MDV=1, WT=wt))
        for t in (0.5, 1, 2, 4, 8, 12, 24):
            c = 1000 * 100 / v * np.exp(-cl / v * t) * np.exp(rng.normal(0, 0.1))
            rows.append(dict(ID=i + 1, TIME=t, EVID=0, AMT=0, DV=round(c, 3), MDV=0, WT=wt))
    path = tmp_path_factory.mktemp("cli") / "study.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_fit_prints_the_table_and_writes_the_fit(csv, tmp_path, capsys):
    out = tmp_path / "fit.nc"
    rc = main([
        "fit", str(csv), "--model", "one_cmt_iv", "--chains", "2", "--warmup", "150",
        "--draws", "100", "--seed", "4", "--quiet", "--covariate", "cl~WT power(ref=70)",
        "--out", str(out),
    ])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "covariate effect cl_wt: power of WT on cl, reference 70" in text
    assert "pop_cl" in text and "r_hat" in text
    assert "subject effects (auto): centred" in text and "seconds: prepare" in text
    idata = pkpd.load_fit(out)
    tab = parameter_table(idata)
    # the table's numbers are the posterior's (checked against numpy directly)
    vals = idata.posterior["pop_cl"].values.ravel()
    assert tab.loc["pop_cl", "median"] == pytest.approx(np.median(vals))
    assert tab.loc["pop_cl", "q5"] == pytest.approx(np.quantile(vals, 0.05))
    assert 0.9 < tab.loc["pop_cl", "r_hat"] < 1.2 and tab.loc["pop_cl", "ess_bulk"] > 20
    om = np.median(idata.posterior["omega_cl"].values)
    assert tab.loc["omega_cl", "cv_percent"] == pytest.approx(100 * np.sqrt(np.exp(om**2) - 1))


def test_fit_bad_input_exits_2_without_traceback(csv, tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "pkpd.cli", "fit", str(csv), "--model", "one_cmt_iv",
         "--covariate", "cl~HEIGHT", "--out", str(tmp_path / "f.nc")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2
    assert "no column HEIGHT" in r.stderr and "Traceback" not in r.stderr
