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
    for name in ("temsirolimus.csv", "temsirolimus_small.csv", "truth.json", "truth_subjects.csv",
                 "ph2_arm_summaries.csv"):  # fmt: skip
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


def _first_week(dose, p):
    """Independent of pkpd: the temsirolimus (2 compartments, 30-min infusion) and sirolimus
    (1 compartment, formed from fm of temsirolimus clearance, molar) ODEs by scipy, with their
    AUCs as extra states: Cmax and AUC over 0-168 h of both (ng/mL, ng*h/mL)."""
    from scipy.integrate import solve_ivp
    from scipy.optimize import minimize_scalar

    mw_tem, mw_sir = 1030.3, 914.2  # g/mol (datasets/README.md, pkpd.models.temsirolimus)
    k10, k12, k21 = p["cl"] / p["v1"], p["q"] / p["v1"], p["q"] / p["v2"]
    ks = p["cl_sir"] / p["v_sir"]

    def rhs(t, y, rate):
        a1, a2, a_s = y[:3]
        return [rate - (k10 + k12) * a1 + k21 * a2, k12 * a1 - k21 * a2,
                p["fm"] * k10 * a1 * mw_sir / mw_tem - ks * a_s,
                1000 * a1 / p["v1"], 1000 * a_s / p["v_sir"]]  # fmt: skip

    opts = dict(method="DOP853", rtol=1e-11, atol=1e-12, dense_output=True)
    s1 = solve_ivp(rhs, (0, 0.5), [0.0] * 5, args=(dose / 0.5,), **opts)
    s2 = solve_ivp(rhs, (0.5, 168.0), s1.y[:, -1], args=(0.0,), **opts)
    sir = lambda t: -1000 * (s1.sol(t) if t <= 0.5 else s2.sol(t))[2] / p["v_sir"]  # noqa: E731
    grid = np.linspace(0, 168, 3361)
    t0 = grid[np.argmin([sir(t) for t in grid])]
    peak = minimize_scalar(sir, bounds=(max(t0 - 0.05, 0), t0 + 0.05), method="bounded",
                           options={"xatol": 1e-9})  # fmt: skip
    return dict(cmax_tem=1000 * s1.y[0, -1] / p["v1"], auc_tem=s2.y[3, -1],
                cmax_sir=-peak.fun, auc_sir=s2.y[4, -1])  # fmt: skip


def test_the_ph2_arm_summaries_are_what_the_stored_truth_gives():
    """The synthetic PH2 arm summaries (issue 22) against each PH2 subject's first-week
    exposure solved here by scipy from truth_subjects.csv (clearance times exp(kappa_cl_1),
    the subject's first occasion) and its first dose in temsirolimus.csv."""
    import pandas as pd

    truth = pd.read_csv(datasets_dir() / "temsirolimus" / "truth_subjects.csv")
    data = pd.read_csv(path("temsirolimus"), comment="#", na_values=".")
    first = data[(data.STUDY == "PH2") & (data.EVID == 1)].groupby("ID").AMT.first()
    truth = truth[truth.STUDY == "PH2"].set_index("ID").loc[first.index]
    x = []
    for sid, r in truth.iterrows():
        p = r.to_dict() | {"cl": r["cl"] * np.exp(r["kappa_cl_1"])}
        x.append(_first_week(first[sid], p) | {"dose": first[sid]})
    x = pd.DataFrame(x)
    arms = pd.read_csv(pkpd.datasets.summaries("temsirolimus_ph2"), comment="#")
    assert len(arms) == 12 and set(arms.N) == {37}
    for _, row in arms.iterrows():
        sub = x[x.dose == float(row.REGIMEN.split()[0])]
        assert len(sub) == row.N
        v = sub[f"{row.METRIC.split('_')[0]}_{row.ENDPOINT[:3]}"].to_numpy()
        if row.STATISTIC == "mean":
            assert row.VALUE == pytest.approx(v.mean(), rel=1e-4)
            sd = v.std(ddof=1)
            want = sd if row.SPREAD == "sd" else 100 * sd / v.mean()
        else:
            assert row.VALUE == pytest.approx(np.exp(np.log(v).mean()), rel=1e-4)
            want = np.log(v).std(ddof=1)
        assert row.SPREAD_VALUE == pytest.approx(want, rel=1e-3), (
            row.ARM,
            row.ENDPOINT,
            row.METRIC,
        )
    # and they read, checked against the model, like any summaries
    agg = pkpd.read_aggregate(pkpd.datasets.summaries("temsirolimus_ph2"), model="temsirolimus")
    assert agg.arms == [("PH2", f"{d} mg weekly") for d in (25, 75, 250)]
