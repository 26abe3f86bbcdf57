"""Bundled synthetic datasets: reproducible, valid, realistic, covered by the priors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pkpd
from pkpd.datasets import NAMES, datasets_dir, path

GEN = datasets_dir() / "temsirolimus" / "generate.py"


def test_generator_reproduces_the_committed_files_exactly(tmp_path):
    spec = importlib.util.spec_from_file_location("generate_temsirolimus", GEN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(tmp_path)
    for name in ("temsirolimus.csv", "temsirolimus_small.csv", "truth.json", "truth_subjects.csv"):
        assert (tmp_path / name).read_bytes() == (GEN.parent / name).read_bytes(), name


@pytest.mark.parametrize("name", sorted(NAMES))
def test_every_bundled_file_passes_validate(name):
    proc = subprocess.run(
        [sys.executable, "-m", "pkpd.cli", "validate", str(path(name))],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "OK: no problems found" in proc.stdout


def test_load_returns_data_and_truth():
    ds, truth = pkpd.datasets.load("temsirolimus")
    assert ds.studies == ("PH1", "PH2", "PH3", "IMMUNO")
    assert set(ds.endpoints) == {"temsirolimus", "sirolimus", "s6k", "vegf", "pd1_cd8"}
    assert list(truth["subjects"]["ID"]) == list(ds.subjects)
    assert ds.summary()["blq"] > 100 and ds.summary()["excluded_mdv1"] > 0
    small, t_small = pkpd.datasets.load("temsirolimus_small")
    assert small.n_subjects == 40 and len(t_small["subjects"]) == 40
    with pytest.raises(ValueError, match="unknown dataset"):
        pkpd.datasets.load("nope")


def test_typical_subject_at_25_mg_reproduces_the_label():
    # Torisel PI §12.3 (literature file §1): Cmax 585 ng/mL, AUC 1627 ng.h/mL; within 15%.
    _, truth = pkpd.datasets.load("temsirolimus_small")
    model = pkpd.load_model("temsirolimus").with_endpoints(["temsirolimus"])
    times = np.concatenate([np.linspace(0.01, 0.5, 50), np.geomspace(0.51, 2000, 2000)])
    import pandas as pd

    df = pd.DataFrame(
        {
            "ID": 1,
            "TIME": np.r_[0, times],
            "AMT": np.r_[25, 0 * times],
            "DUR": np.r_[0.5, 0 * times],
        }
    )
    subj = jax.tree.map(lambda x: jnp.asarray(x[0]), pkpd.read_dataset(df).to_arrays().data)
    c = np.asarray(model.predict(truth["typical"], subj)["temsirolimus"])
    assert c.max() == pytest.approx(585, rel=0.15)
    assert np.trapezoid(np.r_[0, c], np.r_[0, times]) == pytest.approx(1627, rel=0.15)


def test_prior_predictive_covers_the_data():
    """Each endpoint's observations lie inside the priors' 1-99% predictive band (>= 90%)."""
    from numpyro.infer import Predictive

    from pkpd.inference.fit import build_model, prepare

    ds, _ = pkpd.datasets.load("temsirolimus_small")
    spec = prepare("temsirolimus", ds)
    sims = Predictive(build_model(spec), num_samples=200)(jax.random.PRNGKey(0))["y"]
    sims = np.asarray(sims)
    ok = np.isfinite(sims).all(axis=1)
    assert ok.mean() > 0.9
    lo, hi = np.nanquantile(sims[ok], [0.01, 0.99], axis=0)
    y = spec.obs_y
    for j, e in enumerate(spec.endpoints):
        sel = (spec.obs_endpoint == j) & ~spec.obs_blq
        inside = (y[sel] >= lo[sel]) & (y[sel] <= hi[sel])
        assert inside.mean() >= 0.9, (e, inside.mean())


_ = Path
