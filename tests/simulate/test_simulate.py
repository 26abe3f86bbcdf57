"""Dose simulation: the deterministic model, closed forms, devices, seeds, targets, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.integrate import solve_ivp

import pkpd
from pkpd.inference.fit import FitError
from pkpd.models import load_model
from pkpd.models.temsirolimus import MW_SIR, MW_TEM, TemsirolimusModel
from pkpd.regimen import RegimenError
from pkpd.simulate import (
    SimulationError,
    attainment,
    build_population,
    fit_from_values,
    load_simulation,
    save_simulation,
    simulate,
    summarize,
)
from pkpd.simulate.plan import plan_regimen, subject_arrays

from closed_forms import one_cmt_oral_conc
from paths import ROOT

TRUTH = json.loads((ROOT / "datasets" / "temsirolimus" / "truth.json").read_text())
#: Covariates at the references of every temsirolimus covariate effect (multipliers all 1).
REFERENCE_SUBJECT = {"BSA": 1.85, "HCT": 35.1, "CYP3A4_INH": 0, "CYP3A4_IND": 0}
QUIET = dict(progress_bar=False)


@pytest.fixture(scope="module")
def one_cmt_data(one_cmt_iv_design):
    """A 10-subject one-compartment IV study (the data only give studies and provenance)."""
    return one_cmt_iv_design(10, (1.0, 4.0, 12.0), covariates=lambda i: {"WT": 60.0 + 2 * i})


@pytest.fixture(scope="module")
def one_cmt_fit(one_cmt_data):
    return fit_from_values(
        "one_cmt_iv",
        one_cmt_data,
        {"cl": 2.0, "v": 30.0},
        omega={"cl": 0.3, "v": 0.2},
        n_draws=20,
        uncertainty=0.1,
        seed=3,
    )


@pytest.fixture(scope="module")
def tem_fit():
    ds, _ = pkpd.datasets.load("temsirolimus_small")
    return fit_from_values(
        "temsirolimus",
        ds,
        TRUTH["typical"],
        omega=TRUTH["omega"],
        omega_study=TRUTH["omega_study"],
        effects={k: v["value"] for k, v in TRUTH["covariate_effects"].items()},
        n_draws=10,
        uncertainty=0.05,
        seed=2,
    )


def point_posterior(idata, values):
    """The fit with every draw set to ``values`` and every between-subject/study SD to 0."""
    idata = idata.copy()
    post = idata.posterior
    for name in list(post.data_vars):
        if name.startswith("omega_") or name.startswith("eta_"):
            post[name] = xr.zeros_like(post[name])
    for p, v in values.items():
        post[f"pop_{p}"] = xr.full_like(post[f"pop_{p}"], v)
    return idata


def subject_via_dataset(regimen, times, **to_records):
    """One subject through the NONMEM route: regimen records + EVID 2 rows, read and padded."""
    doses = pkpd.Regimen(regimen).to_records(**to_records)
    points = pd.DataFrame({"ID": "1", "TIME": times, "EVID": 2, "AMT": 0.0, "MDV": 1})
    df = pd.concat([doses, points], ignore_index=True).sort_values("TIME", kind="stable")
    pad = pkpd.read_dataset(df).to_arrays()
    return jax.tree.map(lambda x: jnp.asarray(x[0]), pad.data)


# -- building blocks ------------------------------------------------------------------------------
def test_direct_subject_arrays_equal_the_read_dataset_route():
    times = np.array([0.0, 0.25, 0.5, 3.0, 168.0, 170.0, 400.0])
    model = TemsirolimusModel(endpoints=("temsirolimus", "sirolimus", "s6k"))
    predict = jax.jit(model.predict)
    params = {k: jnp.asarray(v) for k, v in TRUTH["typical"].items()}
    for text, bsa in (
        ("175 mg q1w x2 then 75 mg q1w x1 over 30 min", None),
        ("15 mg/m2 q1w x3 over 1 h, hold week 2", 1.7),
    ):
        ref = subject_via_dataset(text, times, bsa_m2=bsa)
        plan = plan_regimen(text, pkpd.Regimen(text), 504.0)
        amt = plan.amount * (bsa if bsa else 1.0)
        mine = subject_arrays(
            jnp.asarray(plan.time),
            jnp.asarray(amt),
            jnp.asarray(plan.dur),
            jnp.ones(plan.n_doses, bool),
            jnp.asarray(times),
            jnp.ones(len(times), jnp.int32),
        )
        for f in ("dose_time", "dose_amt", "dose_dur", "dose_rate", "dose_evid", "dose_mask"):
            np.testing.assert_array_equal(np.asarray(getattr(mine, f)), np.asarray(getattr(ref, f)))
        a, b = predict(params, mine), predict(params, ref)
        for e in model.endpoints:
            np.testing.assert_allclose(np.asarray(a[e]), np.asarray(b[e]), rtol=1e-12)


def test_point_posterior_reproduces_model_predict(one_cmt_fit):
    """A fit overwritten with one value per parameter and zero omegas is the deterministic model."""
    fit = point_posterior(one_cmt_fit, {"cl": 2.0, "v": 30.0})
    regs = ["100 mg q12h x4 over 1 h", "50 mg q12h x4"]
    times = [0.0, 0.5, 1.0, 3.0, 12.0, 12.5, 30.0, 48.0]
    sims = {
        e: simulate(fit, regs, n_subjects=3, n_draws=4, times=times, engine=e, **QUIET)
        for e in ("modal", "predict")
    }
    model = load_model("one_cmt_iv")
    for r, text in enumerate(regs):
        want = np.asarray(
            model.predict({"cl": 2.0, "v": 30.0}, subject_via_dataset(text, times))["conc"]
        )
        for sim in sims.values():
            got = sim["conc"].values[r]  # [draw, subject, time]
            np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), rtol=1e-10, atol=1e-9)
    a, b = sims["modal"], sims["predict"]
    for m in ("cmax_conc_c1", "ctrough_conc_ss", "auc_tau_conc_ss", "auc_tau_conc_c1"):
        # exact vs Simpson integrals (predict engine)
        np.testing.assert_allclose(a[m].values, b[m].values, rtol=1e-6)
    assert a.attrs["engine"] == "modal" and b.attrs["engine"] == "predict"


def test_zero_variability_gives_identical_subjects(one_cmt_fit):
    fit = one_cmt_fit.copy()
    for name in ("omega_cl", "omega_v"):
        fit.posterior[name] = xr.zeros_like(fit.posterior[name])
    sim = simulate(fit, "100 mg q12h x3 over 1 h", n_subjects=5, n_draws=6, seed=4, **QUIET)
    conc = sim["conc"].values[0]  # [draw, subject, time]
    np.testing.assert_array_equal(conc, np.broadcast_to(conc[:, :1], conc.shape))
    assert np.ptp(conc[:, 0, -1]) > 0  # draws still differ (parameter uncertainty)
    with_bsv = simulate(one_cmt_fit, "100 mg q12h x3 over 1 h", n_subjects=5, n_draws=6, **QUIET)
    assert np.all(np.ptp(with_bsv["auc_tau_conc_c1"].values[0], axis=1) > 0)


def test_individual_parameters_follow_the_fitted_hierarchy(one_cmt_data, tem_fit, tmp_path):
    # covariate effects: against the model's own covariate hooks (an independent code path)
    from pkpd.models.temsirolimus import COVARIATE_EFFECTS, apply_covariates

    est = [k[4:] for k in tem_fit.posterior.data_vars if k.startswith("pop_")]
    fit = point_posterior(tem_fit, {p: TRUTH["typical"][p] for p in est})
    sim = simulate(
        fit,
        "25 mg once over 30 min",
        n_subjects=40,
        n_draws=1,
        times=[],
        endpoints=["temsirolimus", "sirolimus"],
        **QUIET,
    )
    for i in range(40):
        covs = {c: float(sim[f"cov_{c}"][i]) for c in ("BSA", "HCT", "CYP3A4_INH", "CYP3A4_IND")}
        want = apply_covariates(TRUTH["typical"], covs, COVARIATE_EFFECTS)
        for p in ("cl", "v1", "cl_sir", "q"):
            np.testing.assert_allclose(float(sim[f"param_{p}"][0, i]), want[p], rtol=1e-12)
    assert sim["param_cl"].attrs["units"] == "L/h"
    # correlated subject effects (LKJ fit): the simulated etas have the fitted SDs and correlation
    text = (ROOT / "priors" / "one_cmt_iv.toml").read_text()
    f = tmp_path / "corr.toml"
    f.write_text(text + '\n[correlation]\nparameters = ["cl", "v"]\n')
    fit = fit_from_values(
        "one_cmt_iv",
        one_cmt_data,
        {"cl": 2.0, "v": 30.0},
        priors=f,
        omega={"cl": 0.3, "v": 0.2},
        n_draws=1,
    )
    fit.posterior["corr_cholesky"][:] = np.array([[1.0, 0.0], [0.8, 0.6]])
    sim = simulate(fit, "100 mg once", n_subjects=4000, n_draws=1, times=[], **QUIET)
    eta = np.log(np.stack([sim["param_cl"][0] / 2.0, sim["param_v"][0] / 30.0]))
    np.testing.assert_allclose(eta.std(axis=1), [0.3, 0.2], rtol=0.05)
    assert abs(np.corrcoef(eta)[0, 1] - 0.8) < 0.03


def test_metrics_match_closed_forms_for_a_one_compartment_infusion(one_cmt_fit):
    cl, v, dose, tau, T, n = 2.0, 30.0, 100.0, 12.0, 2.0, 5
    fit = point_posterior(one_cmt_fit, {"cl": cl, "v": v})
    sims = {
        e: simulate(
            fit, f"{dose:g} mg q12h x{n} over 2 h", n_subjects=2, n_draws=1, engine=e, **QUIET
        )
        for e in ("modal", "predict")
    }
    k, R0 = cl / v, dose / T

    def c_one(s):  # ng/mL, one infusion started s hours ago
        s = np.asarray(s, float)
        rising = R0 / (k * v) * (1 - np.exp(-k * np.clip(s, 0, T)))
        return 1000 * np.where(s <= T, rising, rising * np.exp(-k * (s - T))) * (s >= 0)

    def auc_one(s):  # ng*h/mL, integral of c_one from 0 to s
        s = np.maximum(np.asarray(s, float), 0.0)
        early = R0 / (k * v) * (np.minimum(s, T) - (1 - np.exp(-k * np.minimum(s, T))) / k)
        late = R0 / (k * v) * (1 - np.exp(-k * T)) * (1 - np.exp(-k * np.maximum(s - T, 0))) / k
        return 1000 * (early + late)

    def conc(t):  # every dose started at or before t (a dose starting at t adds nothing yet)
        return sum(c_one(t - i * tau) for i in range(n))

    def auc(a, b):
        return sum(auc_one(b - i * tau) - auc_one(a - i * tau) for i in range(n))

    last = (n - 1) * tau
    want = {
        "cmax_conc_c1": conc(T),
        "ctrough_conc_c1": conc(tau),
        "auc_tau_conc_c1": auc(0, tau),
        "cmax_conc_ss": conc(last + T),
        "ctrough_conc_ss": conc(last + tau),
        "auc_tau_conc_ss": auc(last, last + tau),
    }
    for e, sim in sims.items():
        assert float(sim["interval_ss_start_h"][0]) == last
        for name, value in want.items():
            np.testing.assert_allclose(
                sim[name].values,
                value,
                rtol=1e-9 if e == "modal" else 1e-7,
                err_msg=f"{name} ({e})",
            )
        assert sim["auc_tau_conc_ss"].attrs["units"] == "ng*h/mL"


@pytest.fixture(scope="module")
def tem_blocks_fit(tmp_path_factory):
    """The temsirolimus model built from public blocks (``from_blocks()``), registered, at the
    truth with the bundled priors (renamed for it)."""
    from pkpd.models import register
    from pkpd.models.temsirolimus import from_blocks

    model = register(from_blocks(), replace=True)
    text = (ROOT / "priors" / "temsirolimus.toml").read_text()
    priors = tmp_path_factory.mktemp("blocks") / "priors.toml"
    priors.write_text(text.replace('name = "temsirolimus"', f'name = "{model.name}"', 1))
    ds, _ = pkpd.datasets.load("temsirolimus_small")
    return fit_from_values(model.name, ds, TRUTH["typical"], n_draws=2, priors=priors)


@pytest.mark.parametrize("built", ["class", "blocks"])
def test_temsirolimus_point_posterior_matches_predict_and_a_scipy_reference(built, request):
    """The hand-wired class and the same model from public blocks (simulated through the
    blocks' modal form and metrics) against the class's predict and a scipy reference."""
    tem_fit = request.getfixturevalue({"class": "tem_fit", "blocks": "tem_blocks_fit"}[built])
    values = TRUTH["typical"]
    est = [k[4:] for k in tem_fit.posterior.data_vars if k.startswith("pop_")]
    fit = point_posterior(tem_fit, {p: values[p] for p in est})
    text = "25 mg q1w x3 over 30 min"
    sim = simulate(fit, text, n_subjects=2, n_draws=2, population=REFERENCE_SUBJECT, **QUIET)
    times = sim["time"].values
    params = {k: jnp.asarray(v) for k, v in values.items()}
    want = jax.jit(TemsirolimusModel().predict)(params, subject_via_dataset(text, times))
    got = {e: sim[e].values[0, 0, 0] for e in TemsirolimusModel().endpoints}
    for e in ("temsirolimus", "sirolimus", "s6k"):
        np.testing.assert_allclose(got[e], np.asarray(want[e]), rtol=1e-9, atol=1e-12)
    # VEGF and PD-1: the model's diffrax solution is within ~1e-3 of a tight reference, the
    # simulation's exponential integrator within 1e-4 (reference: the coupled ODE, DOP853)
    ref = _coupled_reference(values, [(168.0 * i, 25.0, 0.5) for i in range(3)], times)
    for j, e in ((4, "vegf"), (5, "pd1_cd8")):
        np.testing.assert_allclose(got[e], np.asarray(want[e]), rtol=2e-3)
        np.testing.assert_allclose(got[e], ref[:, j], rtol=1e-4)
    np.testing.assert_allclose(got["temsirolimus"], ref[:, 0], rtol=1e-6, atol=1e-9)
    # the molar sum and S6K inhibition from the profiles
    tot = 1000 * got["temsirolimus"] / MW_TEM + 1000 * got["sirolimus"] / MW_SIR
    c1_end = int(np.searchsorted(times, 168.0))
    np.testing.assert_allclose(float(sim["ctrough_total_c1"][0, 0, 0]), tot[c1_end], rtol=1e-9)
    np.testing.assert_allclose(
        float(sim["s6k_inhibition_trough_c1"][0, 0, 0]), 100 - got["s6k"][c1_end], rtol=1e-9
    )
    assert sim["ctrough_total_c1"].attrs["units"] == "nmol/L"
    assert "pd1_change_week8" not in sim  # the horizon (3 weeks) does not reach week 8


def _coupled_reference(p, doses, times):
    """Temsirolimus, sirolimus (mg), effect site, VEGF and PD-1 as one ODE (DOP853, rtol 1e-10)."""
    k10, k12, k21 = p["cl"] / p["v1"], p["q"] / p["v1"], p["q"] / p["v2"]
    ks = p["cl_sir"] / p["v_sir"]
    kout_v = 1 / p["vegf_mrt"]
    kin_p = p["pd1_kout"] * p["pd1_base"] / (100 - p["pd1_base"])

    def rhs(t, y, rate):
        a1, a2, a_s, ce, r, pp = y
        c = 1e6 * a1 / p["v1"] / MW_TEM + p["potency"] * 1e6 * a_s / p["v_sir"] / MW_SIR
        return [
            rate - (k10 + k12) * a1 + k21 * a2,
            k12 * a1 - k21 * a2,
            p["fm"] * k10 * a1 * MW_SIR / MW_TEM - ks * a_s,
            p["s6k_ke0"] * (c - ce),
            p["vegf_base"] * kout_v * (1 - p["vegf_imax"] * c / (p["vegf_ic50"] + c)) - kout_v * r,
            kin_p * (1 - p["pd1_imax"] * c / (p["pd1_ic50"] + c)) * (100 - pp) - p["pd1_kout"] * pp,
        ]

    cuts = sorted({0.0, *[t for t, _, _ in doses], *[t + d for t, _, d in doses], max(times)})
    y = np.array([0, 0, 0, 0, p["vegf_base"], p["pd1_base"]], dtype=float)
    out = np.tile(y, (len(times), 1))
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        rate = sum(a / d for t, a, d in doses if t <= lo < t + d)
        inside = (times > lo) & (times <= hi)
        t_eval = np.unique(np.append(times[inside], hi))
        sol = solve_ivp(
            rhs, (lo, hi), y, method="DOP853", rtol=1e-10, atol=1e-12, t_eval=t_eval, args=(rate,)
        )
        out[inside] = sol.y.T[: inside.sum()]
        y = sol.y[:, -1]
    out[:, 0] *= 1000 / p["v1"]  # mg -> ng/mL
    return out


# -- reproducibility and devices -------------------------------------------------------------------
DEVICE_RUN = dict(
    regimens=["25 mg q1w x2 over 30 min", "10 mg/m2 q1w x2"],
    n_subjects=7,
    n_draws=5,
    seed=11,
    study="new",
    chunk_size=10,
    times=[0.0, 24.0, 300.0],
)


PREDICT_RUN = ["100 mg q12h x3 over 1 h", "50 mg q12h x3"]
PREDICT_KW = dict(n_subjects=5, n_draws=3, chunk_size=4, progress_bar=False)


def test_four_devices_give_the_one_device_result(tem_fit, one_cmt_fit, tmp_path):
    path, path2 = tmp_path / "fit.nc", tmp_path / "fit2.nc"
    pkpd.save_fit(tem_fit, path)
    pkpd.save_fit(one_cmt_fit, path2)
    code = (
        "import sys, json, jax, pkpd\n"
        "from pkpd.simulate import simulate, save_simulation\n"
        "assert jax.device_count() == 4, jax.devices()\n"
        f"kw = json.loads({json.dumps(json.dumps(DEVICE_RUN))})\n"
        "regs = kw.pop('regimens')\n"
        f"sim = simulate({str(path)!r}, regs, progress_bar=False, **kw)\n"
        f"save_simulation(sim, {str(tmp_path / 'four.nc')!r})\n"
        f"sim = simulate({str(path2)!r}, {PREDICT_RUN!r}, engine='predict', **{PREDICT_KW!r})\n"
        f"save_simulation(sim, {str(tmp_path / 'four_predict.nc')!r})\n"
    )
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    four = load_simulation(tmp_path / "four.nc")
    kw = dict(DEVICE_RUN)
    regs = kw.pop("regimens")
    one = simulate(path, regs, **QUIET, **kw)
    assert jax.device_count() == 1
    for name in one.data_vars:
        if one[name].dtype.kind == "f":
            np.testing.assert_array_equal(one[name].values, four[name].values, err_msg=name)
    assert one["s6k"].dims == ("regimen", "draw", "subject", "time")
    assert list(one["regimen"].values) == regs
    # the model.predict engine: the same to rounding (XLA may compile the 4-device program's
    # sums in another order)
    four = load_simulation(tmp_path / "four_predict.nc")
    one = simulate(path2, PREDICT_RUN, engine="predict", **PREDICT_KW)
    for name in ("conc", "auc_tau_conc_ss", "cmax_conc_c1"):
        np.testing.assert_allclose(one[name].values, four[name].values, rtol=1e-13)


def test_same_seed_same_numbers_for_any_chunk_size(one_cmt_fit):
    """(A rerun with the same seed in another process and on 4 devices: the test above.)"""
    kw = dict(n_subjects=6, n_draws=5, times=[1.0, 20.0], **QUIET)
    a = simulate(one_cmt_fit, "100 mg q12h x3 over 1 h", seed=8, chunk_size=4, **kw)
    c = simulate(one_cmt_fit, "100 mg q12h x3 over 1 h", seed=9, chunk_size=4, **kw)
    d = simulate(one_cmt_fit, "100 mg q12h x3 over 1 h", seed=8, chunk_size=4096, **kw)
    assert not np.allclose(a["conc"].values, c["conc"].values)
    np.testing.assert_array_equal(a["cov_WT"].values, d["cov_WT"].values)
    # another batch shape: equal to the last bits (XLA's vectorised math may differ there)
    for name in ("conc", "auc_tau_conc_ss", "cmax_conc_c1"):
        np.testing.assert_allclose(a[name].values, d[name].values, rtol=1e-13)


# -- targets, summaries, files ---------------------------------------------------------------------
def test_attainment_summary_and_files(tem_fit, tmp_path):
    regs = {"low": "25 mg q1w x3 over 30 min", "high": "175 mg q1w x3 over 30 min"}
    sim = simulate(tem_fit, regs, n_subjects=20, n_draws=6, seed=5, times=[], **QUIET)
    assert sim.sizes["time"] == 0 and list(sim["regimen"].values) == ["low", "high"]
    table = attainment(
        sim,
        [
            "s6k_inhibition_trough_ss >= 80",
            "auc_tau_sirolimus_ss <= 8000 and cmax_temsirolimus_c1 < 2000",
        ],
    )
    first = table[table["target"] == "s6k_inhibition_trough_ss >= 80"]
    assert list(first["regimen"]) == ["high", "low"] and list(first["rank"]) == [1, 2]
    assert (first["ci_low"] <= first["probability"]).all()
    assert (first["probability"] <= first["ci_high"]).all()
    ceiling = table[table["target"].str.startswith("auc")]
    assert ceiling.iloc[0]["regimen"] == "low"
    # the fraction per draw, by hand
    v = sim["s6k_inhibition_trough_ss"].sel(regimen="low").values
    np.testing.assert_allclose(
        first.set_index("regimen").loc["low", "probability"], np.median(np.mean(v >= 80, axis=1))
    )
    summ = summarize(sim)
    assert {"regimen", "metric", "units", "median", "low", "high"} <= set(summ.columns)
    out = save_simulation(sim, tmp_path / "sim.nc", targets="s6k_inhibition_trough_ss >= 80")
    back = load_simulation(out["netcdf"])
    assert json.loads(back.attrs.pop("targets")) == ["s6k_inhibition_trough_ss >= 80"]
    xr.testing.assert_identical(back, sim)
    assert pd.read_csv(out["summary"]).shape[0] == len(summ)
    assert pd.read_csv(out["attainment"])["rank"].tolist() == [1, 2]
    assert not list(tmp_path.glob("*.tmp"))
    for bad in ("cmax_nothing >= 1", "s6k_inhibition_trough_ss => 80", ""):
        with pytest.raises(SimulationError):
            attainment(sim, bad)
    # covariates and provenance
    assert sim["cov_BSA"].dims == ("subject",)
    assert sim.attrs["pkpd_simulation"] == 1 and sim.attrs["seed"] == 5
    assert sim.attrs["fit_data_sha256"] == tem_fit.attrs["data_sha256"]
    assert json.loads(sim.attrs["regimens"]) == list(regs.values())


def test_study_choice_moves_the_exposure(tem_fit):
    fit = tem_fit.copy()
    eta = fit.posterior["eta_study_cl"]
    fit.posterior["eta_study_cl"] = eta + 0.5 * (eta["study"] == "PH1")
    kw = dict(n_subjects=10, n_draws=4, seed=1, times=[], endpoints=["temsirolimus"], **QUIET)
    typical = simulate(fit, "25 mg q1w x2 over 30 min", **kw)
    ph1 = simulate(fit, "25 mg q1w x2 over 30 min", study="PH1", **kw)
    ratio = ph1["auc_tau_temsirolimus_c1"] / typical["auc_tau_temsirolimus_c1"]
    np.testing.assert_allclose(ratio.values, np.exp(-0.5), rtol=0.02)  # AUC ∝ 1/CL
    assert ph1.attrs["study"] == "PH1" and "typical" in typical.attrs["study"]


# -- populations and errors ------------------------------------------------------------------------
def test_virtual_populations(tem_fit):
    from pkpd.inference.posterior import restore_spec

    spec = restore_spec(tem_fit)
    rng = np.random.default_rng(0)
    table, how = build_population(spec, None, 50, rng)
    assert len(table) == 50 and "BSA" in table and "resampled" in how
    fitted = pd.DataFrame(np.asarray(spec.padded.data.cov), columns=spec.padded.covariates)
    assert (
        table.merge(fitted.drop_duplicates(), how="left", indicator=True)["_merge"].eq("both").all()
    )
    table, how = build_population(
        spec,
        {"cyp3a4_inh": 1, "BSA": "truncnormal(1.8, 0.2, 1.4, 2.2)", "HCT": ("normal", 38, 4)},
        400,
        rng,
    )
    assert (table["CYP3A4_INH"] == 1).all() and table["BSA"].between(1.4, 2.2).all()
    assert abs(table["HCT"].mean() - 38) < 1.0 and "CYP3A4_INH=1" in how
    given = pd.DataFrame(
        {"BSA": [1.6, 2.0], "HCT": [30, 40], "CYP3A4_INH": [0, 1], "CYP3A4_IND": [0, 0]}
    )
    table, _ = build_population(spec, given, None, rng)
    pd.testing.assert_frame_equal(table, given.astype(float))
    for bad in ({"BSA": "normal(1.8)"}, {"BSA": "gamma(1, 2)"}, {"CYP3A4_INH": "bernoulli(2)"}):
        with pytest.raises(SimulationError):
            build_population(spec, bad, 10, rng)


def test_bad_input_gives_clear_errors(tem_fit, tmp_path):
    reg = "25 mg q1w x2 over 30 min"
    with pytest.raises(RegimenError, match="regimen 2.*cannot read"):
        simulate(tem_fit, [reg, "25 mg every blue moon"], **QUIET)
    with pytest.raises(SimulationError, match="not a study of the fit.*PH1"):
        simulate(tem_fit, reg, study="PH9", **QUIET)
    for n in (0, -3, 2.5):
        with pytest.raises(SimulationError, match="n_subjects"):
            simulate(tem_fit, reg, n_subjects=n, **QUIET)
    with pytest.raises(SimulationError, match="at most 10"):
        simulate(tem_fit, reg, n_draws=11, **QUIET)
    with pytest.raises(SimulationError, match="cannot be simulated"):
        simulate(tem_fit, reg, endpoints=["conc"], **QUIET)
    with pytest.raises(SimulationError, match="BSA"):
        simulate(tem_fit, "15 mg/m2 q1w x2", population=pd.DataFrame({"HCT": [35.0]}), **QUIET)
    with pytest.raises(SimulationError, match="open-ended"):
        simulate(tem_fit, "25 mg q1w", **QUIET)
    other = tmp_path / "other.nc"
    xr.Dataset({"a": ("x", [1.0])}).to_netcdf(other)
    with pytest.raises(FitError, match="not a pkpd fit"):
        simulate(other, reg, **QUIET)
    junk = tmp_path / "junk.nc"
    junk.write_text("hello")
    with pytest.raises(FitError, match="not a netCDF fit file"):
        simulate(junk, reg, **QUIET)
    with pytest.raises(SimulationError, match="InferenceData"):
        simulate({"posterior": 1}, reg, **QUIET)
    with pytest.raises(SimulationError, match="not a pkpd simulation"):
        load_simulation(other)


# -- command line ----------------------------------------------------------------------------------
def test_cli_simulate(one_cmt_fit, tmp_path, capsys):
    from pkpd.cli import main

    fit = tmp_path / "fit.nc"
    pkpd.save_fit(one_cmt_fit, fit)
    out = tmp_path / "sim.nc"
    rc = main(
        [
            "simulate",
            str(fit),
            "--regimen",
            "100 mg q12h x4 over 1 h",
            "--regimen",
            "200 mg q12h x4 over 1 h",
            "--subjects",
            "20",
            "--draws",
            "5",
            "--seed",
            "3",
            "--target",
            "ctrough_conc_ss >= 400",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    sim = load_simulation(out)
    assert sim.sizes == {"regimen": 2, "draw": 5, "subject": 20, "time": sim.sizes["time"]}
    assert out.with_suffix(".csv").exists() and (tmp_path / "sim_attainment.csv").exists()
    assert "target: ctrough_conc_ss >= 400" in text and "200 mg q12h x4 over 1 h" in text
    rc = main(["simulate", str(fit), "--regimen", "100 mg every blue moon", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot read regimen" in err


# -- the route of a regimen's doses ---------------------------------------------------------------
def test_a_regimen_takes_the_route_of_the_models_dosing_compartment():
    """An oral model's regimen without a route is simulated and described as oral doses into
    the depot (the closed form); a route or an infusion the model cannot give is refused, and
    so is an oral regimen on an IV model, instead of being put into the default compartment."""
    from pkpd.simulate import SimulationError, fit_from_values

    data = pd.DataFrame(
        [dict(ID=1, TIME=0.0, EVID=1, AMT=100.0, DV="."), dict(ID=1, TIME=2.0, EVID=0, DV=1.0)]
    )
    values = {"cl": 4.0, "v": 40.0, "ka": 0.8}
    oral = fit_from_values("one_cmt_oral", data, values, n_draws=1)
    times = np.array([1.0, 5.0, 25.0, 30.0])
    sim = simulate(oral, ["100 mg q24h x2", "100 mg q24h x2 oral"], n_subjects=1, n_draws=1,
                   times=times, typical=True, **QUIET)  # fmt: skip
    want = one_cmt_oral_conc(
        times, [(0.0, 100.0), (24.0, 100.0)], **{k: values[k] for k in ("ka", "cl", "v")}
    )
    for r in range(2):
        np.testing.assert_allclose(sim["conc"].values[r, 0, 0], want, rtol=1e-9)
        assert "oral" in str(sim["regimen_description"].values[r])
        assert "IV" not in str(sim["regimen_description"].values[r])
    for text, said in (("100 mg q24h x2 over 1 h", "IV doses"), ("100 mg q24h x2 iv", "IV doses")):
        with pytest.raises(SimulationError, match=f"{said}, but model 'one_cmt_oral'.*depot"):
            simulate(oral, [text], n_subjects=1, n_draws=1, times=times, **QUIET)
    iv = fit_from_values("one_cmt_iv", data, {"cl": 4.0, "v": 40.0}, n_draws=1)
    with pytest.raises(SimulationError, match="doses by mouth, but model 'one_cmt_iv'"):
        simulate(iv, ["100 mg q24h x2 oral"], n_subjects=1, n_draws=1, times=times, **QUIET)
