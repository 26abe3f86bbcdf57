"""The notebooks run top to bottom (small settings) and are stored without outputs."""

from __future__ import annotations

import os

from notebook_run import assert_stored_clean, execute, figures
from paths import ROOT

NOTEBOOKS = ROOT / "notebooks"
ORDER = ["01_fit.ipynb", "02_simulate.ipynb"]  # 02 uses the fit written by 01


def test_notebooks_are_stored_without_outputs():
    for name in ORDER:
        assert_stored_clean(NOTEBOOKS / name)


def test_notebooks_run_top_to_bottom(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("PKPD_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("PKPD_NOTEBOOK_OUT", str(out))
    # the kernel is a child process: it inherits the environment set above
    for name in ORDER:
        nb = execute(NOTEBOOKS / name, tmp_path)
        images = figures(nb)
        assert images >= 4, f"{name}: only {images} figures were displayed"
    for f in ("fit.nc", "ppc.nc", "fit_report.html", "sim.nc", "REPORT.html"):
        assert (out / f).stat().st_size > 0, f
    assert os.environ["PKPD_NOTEBOOK_SMALL"] == "1"
