"""The notebooks run top to bottom (small settings) and are stored without outputs."""

from __future__ import annotations

import os

import pytest

from paths import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = ROOT / "notebooks"
ORDER = ["01_fit.ipynb", "02_simulate.ipynb"]  # 02 uses the fit written by 01


def test_notebooks_are_stored_without_outputs():
    for name in ORDER:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, name
        tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1 and nb.cells.index(tagged[0]) == 1, name


def test_notebooks_run_top_to_bottom(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("PKPD_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("PKPD_NOTEBOOK_OUT", str(out))
    # the kernel is a child process: it inherits the environment set above
    for name in ORDER:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        client = nbclient.NotebookClient(
            nb,
            timeout=3600,  # per cell: a hang guard, not a time limit (a busy machine is slow)
            kernel_name="python3",
            resources={"metadata": {"path": str(tmp_path)}},
        )
        client.execute()  # raises CellExecutionError, with the cell and traceback, on failure
        images = sum(
            1
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.outputs
            if "image/png" in o.get("data", {})
        )
        assert images >= 4, f"{name}: only {images} figures were displayed"
    for f in ("fit.nc", "fit_report.html", "sim.nc", "REPORT.html"):
        assert (out / f).stat().st_size > 0, f
    assert os.environ["PKPD_NOTEBOOK_SMALL"] == "1"
