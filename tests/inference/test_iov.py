"""Inter-occasion variability (IOV) in fits: recovery of simulation truth on a one-compartment
study with three occasions per subject, the InferenceData layout, and the checks that refuse a
fit IOV cannot be honest about (no occasions, a model that cannot vary the parameter, an
infusion running into the next occasion)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pkpd
from pkpd.inference.spec import FitError
from pkpd.models import load_model

from studies import weekly_occasions_design

TRUTH = {"cl": 2.0, "v": 30.0, "omega_cl": 0.3, "omega_v": 0.2, "iov_cl": 0.25, "prop": 0.1}
S, N_OCC = 24, 3
TIMES = (0.5, 2.0, 6.0, 12.0, 24.0)

PRIORS = """
[model]
name = "one_cmt_iv"

[parameters.cl]
unit = "L/h"
prior = { family = "lognormal", median = 2.0, sd_log = 1.0 }
bsv = { family = "halfnormal", scale = 0.5 }
iov = { family = "halfnormal", scale = 0.5 }

[parameters.v]
unit = "L"
prior = { family = "lognormal", median = 30.0, sd_log = 1.0 }
bsv = { family = "halfnormal", scale = 0.5 }

[residual.conc]
model = "proportional"
unit = "ng/mL"
proportional = { family = "halfnormal", scale = 0.3 }
"""


def weekly_design(n=S, occasions=N_OCC, rate=0.0):
    """One 100 mg IV dose a week, each week an occasion, five samples after each dose."""
    return weekly_occasions_design(n, occasions, TIMES, rate)


@pytest.fixture(scope="module")
def study():
    """Data simulated from TRUTH: CL_ik = CL exp(η_i + κ_ik), V_i = V exp(η_v,i)."""
    rng = np.random.default_rng(14)
    df = weekly_design()
    pad = pkpd.read_dataset(df).to_arrays()
    eta = rng.normal(0.0, [TRUTH["omega_cl"], TRUTH["omega_v"]], size=(S, 2))
    kappa = rng.normal(0.0, TRUTH["iov_cl"], size=(S, N_OCC))
    # a typical draw (effects' means within one standard error of 0, SDs within 25% of the
    # truth), so that a truth outside a 90% interval points at the fit, not at the draw
    se = np.array([TRUTH["omega_cl"], TRUTH["omega_v"]]) / np.sqrt(S)
    assert np.all(np.abs(eta.mean(0)) < se)
    assert abs(kappa.mean()) < TRUTH["iov_cl"] / np.sqrt(kappa.size)
    assert np.allclose(eta.std(0), [TRUTH["omega_cl"], TRUTH["omega_v"]], rtol=0.25)
    assert np.isclose(kappa.std(), TRUTH["iov_cl"], rtol=0.25)
    params = {
        "cl": jnp.asarray(TRUTH["cl"] * np.exp(eta[:, :1] + kappa)),
        "v": jnp.asarray(TRUTH["v"] * np.exp(eta[:, 1])),
    }
    m = load_model("one_cmt_iv")
    pred = np.asarray(jax.vmap(m.predict)(params, jax.tree.map(jnp.asarray, pad.data))["conc"])
    y = pred * np.exp(rng.normal(0.0, TRUTH["prop"], pred.shape))
    df.loc[df.EVID == 0, "DV"] = y[np.asarray(pad.data.point_mask)]
    return df


@pytest.fixture(scope="module")
def priors_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("iov") / "priors.toml"
    path.write_text(PRIORS)
    return path


@pytest.fixture(scope="module")
def iov_fit(study, priors_path):
    return pkpd.fit(
        "one_cmt_iv", study, priors_path, chains=2, warmup=300, draws=300, seed=1,
        progress_bar=False,
    )  # fmt: skip


def test_between_subject_and_between_occasion_sds_are_both_recovered(iov_fit):
    post = iov_fit.posterior
    truth = {
        "pop_cl": TRUTH["cl"],
        "pop_v": TRUTH["v"],
        "omega_cl": TRUTH["omega_cl"],
        "omega_v": TRUTH["omega_v"],
        "omega_iov_cl": TRUTH["iov_cl"],
        "sigma_prop_conc": TRUTH["prop"],
    }
    for name, true in truth.items():
        lo, hi = np.quantile(post[name].values, [0.05, 0.95])
        assert lo < true < hi, (name, lo, hi, true)
    # the two SDs are told apart, not traded against each other
    r = np.corrcoef(post["omega_cl"].values.ravel(), post["omega_iov_cl"].values.ravel())[0, 1]
    assert abs(r) < 0.3, r
    assert float(post["omega_iov_cl"].std()) < 0.05  # informed, not the prior (SD ~0.3)


def test_occasion_effects_are_per_subject_and_occasion(iov_fit):
    post = iov_fit.posterior
    assert post["kappa_cl"].dims[2:] == ("subject", "occasion")
    assert post["theta_cl"].dims[2:] == ("subject", "occasion")
    assert post["theta_v"].dims[2:] == ("subject",)
    assert list(post.coords["occasion"].values) == [1, 2, 3]
    labels = iov_fit.constant_data["occasion_label"].values
    assert labels.shape == (S, N_OCC) and list(labels[0]) == ["1", "2", "3"]
    # theta = pop · exp(eta + kappa), draw by draw
    want = post["pop_cl"] * np.exp(post["eta_cl"] + post["kappa_cl"])
    np.testing.assert_allclose(post["theta_cl"].values, want.values, rtol=1e-10)
    assert iov_fit.attrs["iov"] == '["cl"]'


def test_iov_without_occasions_in_the_data_is_refused(study, priors_path):
    with pytest.raises(FitError, match="data have no occasions: add an OCC column"):
        pkpd.fit("one_cmt_iv", study.drop(columns="OCC"), priors_path, method="map")


def test_iov_on_a_parameter_the_model_cannot_vary_is_refused(study, tmp_path):
    from pkpd.models import LinearPKModel

    class Fixed(LinearPKModel):
        @property
        def occasion_parameters(self):
            return ("v",)

    path = tmp_path / "p.toml"
    path.write_text(PRIORS.replace('name = "one_cmt_iv"', 'name = "one_cmt_iv_no_iov"'))
    model = Fixed("one_cmt_iv_no_iov", 1, False)
    with pytest.raises(FitError, match=r"cannot change parameter\(s\) cl between occasions"):
        pkpd.fit(model, study, path, method="map")


def test_infusion_running_into_the_next_occasion_is_refused_with_its_line(priors_path, tmp_path):
    df = weekly_design(n=2, occasions=2, rate=0.5)  # 100 mg at 0.5 mg/h: 200 h, past 168 h
    df.to_csv(tmp_path / "d.csv", index=False)
    # file lines (header = line 1) of the first dose of each subject; the second doses are in
    # the last occasion, with nothing after them to run into
    with pytest.raises(FitError, match=r"infusions still running .* \(data lines 2, 14\)"):
        pkpd.fit("one_cmt_iv", tmp_path / "d.csv", priors_path, method="map")


def test_iov_priors_are_checked_like_the_others(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(PRIORS.replace('iov = { family = "halfnormal", scale = 0.5 }',
                                   'iov = { family = "halfnormal", scale = -1 }'))  # fmt: skip
    with pytest.raises(pkpd.inference.priors.PriorsError, match="iov"):
        pkpd.inference.priors.load_priors(path)


def test_parameter_table_separates_between_occasion_from_between_subject(iov_fit):
    from pkpd import diagnostics as dx

    table = dx.parameter_table(iov_fit)
    assert table.loc["omega_iov_cl", "kind"] == "between-occasion SD"
    assert table.loc["omega_cl", "kind"] == "between-subject SD"
    # shrinkage of the occasion effects, by its formula over the posterior
    post = iov_fit.posterior
    mean_k = post["kappa_cl"].mean(("chain", "draw")).values.ravel()  # every occasion is real
    want = 100 * (1 - np.std(mean_k, ddof=1) / float(post["omega_iov_cl"].median()))
    assert table.loc["omega_iov_cl", "shrinkage_percent"] == pytest.approx(want, rel=1e-12)
    assert 0 < want < 50


def test_predictive_replicates_draw_new_occasion_effects(iov_fit):
    """NPDE of the fitted data are ~N(0, 1) only if each replicate draws new κ: leaving them
    out (measured on this design: NPDE SD 1.38) makes the replicates too narrow."""
    from pkpd import diagnostics as dx

    ppc = dx.posterior_predictive(iov_fit, n_replicates=200, n_draws=50, seed=3)
    assert abs(float(ppc.npde.mean())) < 0.15
    assert 0.9 < float(ppc.npde.std()) < 1.12


def test_simulation_draws_a_new_occasion_effect_per_dose_and_carries_drug_over(iov_fit):
    from pkpd.simulate import SimulationError, simulate

    times = [24.0, 167.9, 192.0, 360.0]
    sim = simulate(iov_fit, {"weekly": "100 mg q1w x3", "fortnightly": "100 mg q2w x2"},
                   n_draws=40, n_subjects=30, times=times, seed=2, progress_bar=False)  # fmt: skip
    assert sim["param_cl"].dims == ("draw", "subject", "occasion")
    assert sim["param_v"].dims == ("draw", "subject")
    np.testing.assert_array_equal(sim["occasion_start_h"].values[0], [0, 168, 336])
    assert sim.attrs["engine"] == "predict"
    # within a subject, log CL varies between occasions with SD omega_iov (pooled over draws)
    post = iov_fit.posterior
    om = post["omega_iov_cl"].values.reshape(-1)[sim["posterior_index"].values]
    lcl = np.log(sim["param_cl"].values)
    within = ((lcl - lcl.mean(2, keepdims=True)) ** 2).sum(2) / 2  # [draw, subject]
    ratio = float(np.mean(within / om[:, None] ** 2))
    assert 0.85 < ratio < 1.15, ratio  # 1200 variance estimates with 2 df each: SE ~0.04
    # profiles: one IV bolus a week, each week its own CL, the amount left carried over
    d, s = 3, 5
    cl, v = sim["param_cl"].values[d, s], float(sim["param_v"].values[d, s])

    def closed(t):
        amount, start = 0.0, 0.0
        for k, b in enumerate((0.0, 168.0, 336.0)):
            if t < b:
                break
            amount = amount * np.exp(-cl[k - 1] / v * (b - start)) if k else 0.0
            amount, start, kk = amount + 100.0, b, k
        return 1000 * amount / v * np.exp(-cl[kk] / v * (t - start))

    np.testing.assert_allclose(
        sim["conc"].sel(regimen="weekly").values[d, s], [closed(t) for t in times], rtol=1e-10
    )
    with pytest.raises(SimulationError, match="engine='modal' does not support parameters"):
        simulate(iov_fit, "100 mg once", n_draws=2, n_subjects=2, engine="modal",
                 progress_bar=False)  # fmt: skip
    with pytest.raises(SimulationError, match="an infusion still runs when the next occasion"):
        simulate(iov_fit, "100 mg q1w x2 over 24 h", n_draws=2, n_subjects=2,
                 occasions="every 12 h", progress_bar=False)  # fmt: skip
    with pytest.raises(SimulationError, match="occasions='fortnightly'; expected 'dose'"):
        simulate(iov_fit, "100 mg once", n_draws=2, n_subjects=2, occasions="fortnightly",
                 progress_bar=False)  # fmt: skip


def test_typical_simulation_of_an_iov_fit_has_no_occasion_effects(iov_fit):
    from pkpd.simulate import simulate

    sim = simulate(iov_fit, "100 mg once", n_draws=4, typical=True, times=[0.0, 12.0],
                   progress_bar=False)  # fmt: skip
    post = iov_fit.posterior
    cl = post["pop_cl"].values.reshape(-1)[sim["posterior_index"].values]
    v = post["pop_v"].values.reshape(-1)[sim["posterior_index"].values]
    np.testing.assert_allclose(
        sim["conc"].values[0, :, 0, 1], 1000 * 100 / v * np.exp(-cl / v * 12.0), rtol=1e-9
    )


def test_cli_fit_derives_weekly_occasions_and_takes_iov_from_the_command_line(
    study, tmp_path, capsys
):
    from pkpd.cli import main
    from pkpd.inference.fit import load_fit

    six = study[study.ID <= 6].drop(columns="OCC")
    six.to_csv(tmp_path / "d.csv", index=False)
    plain = tmp_path / "plain.toml"  # the priors without any iov entry
    plain.write_text(PRIORS.replace('iov = { family = "halfnormal", scale = 0.5 }\n', ""))
    out = tmp_path / "fit.nc"
    args = ["fit", str(tmp_path / "d.csv"), "--model", "one_cmt_iv", "--priors", str(plain)]
    args += ["--method", "map", "--occasions", "every 1 w", "--out", str(out), "--quiet"]
    assert main(args[:-3] + ["--iov", "cl=-1", "--out", str(out), "--quiet"]) == 2
    assert "--iov 'cl=-1': expected PARAMETER or PARAMETER=SCALE" in capsys.readouterr().err
    assert not out.exists()
    assert main(args + ["--iov", "cl=0.4"]) == 0
    fit = load_fit(out)
    assert fit.posterior["kappa_cl"].sizes["occasion"] == 3
    np.testing.assert_array_equal(fit.constant_data["occasion_start"].values, [[0, 168, 336]] * 6)
    assert fit.constant_data["occasion_label"].values[5].tolist() == ["1", "2", "3"]
    from pkpd.inference.posterior import restore_priors

    assert restore_priors(fit).parameters["cl"].iov.params == {"scale": 0.4}


def test_default_priors_drop_their_iov_on_data_without_occasions(tmp_path, monkeypatch):
    """Bundled priors that give clearance an iov (here a copy of temsirolimus's with one): on
    data without occasions a fit with the defaults drops it (listed), while the same priors
    passed explicitly are refused; on data with occasions it is kept."""
    import pandas as pd

    from pkpd.inference import priors as P
    from pkpd.inference.spec import prepare

    text = (P.bundled_priors_dir() / "temsirolimus.toml").read_text()
    anchor = 'bsv_study = { family = "halfnormal", scale = 0.15 }\n'
    assert text.count(anchor) >= 1
    text = text.replace(anchor, anchor + 'iov = { family = "halfnormal", scale = 0.2 }\n', 1)
    (tmp_path / "temsirolimus.toml").write_text(text)
    monkeypatch.setattr(P, "bundled_priors_dir", lambda: tmp_path)
    assert pkpd.load_priors(model="temsirolimus").parameters["cl"].iov is not None

    ds, _ = pkpd.datasets.load("temsirolimus_small")
    raw = pd.read_csv(pkpd.datasets.path("temsirolimus_small"), comment="#", dtype=str)
    plain = pkpd.read_dataset(raw.drop(columns="OCC"), model="temsirolimus")
    assert not plain.to_arrays().data.has_occasions
    spec = prepare("temsirolimus", plain, None)
    assert spec.dropped_iov == ["cl"] and spec.iov == []
    assert spec.priors.parameters["cl"].iov is None
    assert "iov" not in spec.priors.raw["parameters"]["cl"]
    with pytest.raises(FitError, match="data have no occasions"):
        prepare("temsirolimus", plain, pkpd.load_priors(model="temsirolimus"))
    with_occ = prepare("temsirolimus", ds, None)
    assert with_occ.iov == ["cl"] and with_occ.dropped_iov == []


def test_a_fit_from_values_carries_the_occasion_sd(study, priors_path):
    """pkpd.simulate.fit_from_values with omega_iov: the occasion SD as given, occasion
    effects 0, individual clearances per occasion equal to the population value."""
    from pkpd.simulate.errors import SimulationError
    from pkpd.simulate.synthetic import fit_from_values

    values = {"cl": TRUTH["cl"], "v": TRUTH["v"]}
    idata = fit_from_values(
        "one_cmt_iv", study, values, omega_iov={"cl": 0.25}, n_draws=3, priors=priors_path
    )
    post = idata.posterior
    assert np.all(post["omega_iov_cl"].values == 0.25)
    assert post["kappa_cl"].dims[2:] == ("subject", "occasion")
    assert post["theta_cl"].shape == (1, 3, S, N_OCC)
    np.testing.assert_allclose(post["theta_cl"].values, TRUTH["cl"], rtol=1e-12)
    with pytest.raises(SimulationError, match="occasion variability"):
        fit_from_values("one_cmt_iv", study, values, omega_iov={"v": 0.1}, priors=priors_path)
