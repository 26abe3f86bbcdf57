"""The notebook of a user's own models (issue 20, item 4) runs top to bottom with its small
settings: a model from blocks fitted to synthetic data it makes, one from the user's equations
predicted on its own synthetic data (its fit runs with the full settings; ODE fits are tested
in ``test_ode_model.py``)."""

from __future__ import annotations

from notebook_run import assert_stored_clean, execute, figures, printed
from paths import ROOT

NOTEBOOK = ROOT / "notebooks" / "03_your_model.ipynb"


def test_the_notebook_is_stored_without_outputs():
    assert_stored_clean(NOTEBOOK)


def test_your_model_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("PKPD_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("PKPD_NOTEBOOK_OUT", str(out))
    nb = execute(NOTEBOOK, tmp_path)
    images = figures(nb)
    assert images >= 5, f"only {images} figures were displayed"
    assert "credible intervals cover the truth" in printed(nb)
    assert (out / "oral_idr_fit.nc").stat().st_size > 0
