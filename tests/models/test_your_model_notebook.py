"""The notebook of a user's own models (issue 20, item 4) runs top to bottom with its small
settings: a model from blocks fitted to synthetic data it makes, one from the user's equations
predicted on its own synthetic data (its fit runs with the full settings; ODE fits are tested
in ``test_ode_model.py``)."""

from __future__ import annotations

import pytest

from paths import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = ROOT / "notebooks" / "03_your_model.ipynb"


def test_the_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and nb.cells.index(tagged[0]) == 1


def test_your_model_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("PKPD_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("PKPD_NOTEBOOK_OUT", str(out))
    nb = nbformat.read(NOTEBOOK, as_version=4)
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
    assert images >= 5, f"only {images} figures were displayed"
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "credible intervals cover the truth" in text
    assert (out / "oral_idr_fit.nc").stat().st_size > 0
