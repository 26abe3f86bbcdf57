"""Diagnostics against independent references.

* shrinkage and %CV formulas on a hand-made posterior;
* R-hat / ESS / divergences on hand-made chains;
* NPDE of observations drawn from the replicates' own (correlated) distribution are N(0, 1);
* on a fit whose posterior is replaced by the truth the data were simulated from: PRED equals
  the model evaluated directly, NPDE are N(0, 1), the VPC's 90% band holds ~90% of the data and
  the simulated BLQ fraction matches the observed one; a wrong clearance is detected;
* simulation tables against hand computations on a small simulation built by hand.
"""

from __future__ import annotations

import copy

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy import stats

import pkpd
from pkpd import diagnostics as dx
from pkpd.models import load_model

from studies import PRIORS, TRUTH, fake_simulation, quick_fit, simulate_study


def with_truth(idata, **changes):
    """A copy of a fit whose every posterior draw is the truth (``changes`` override it)."""
    t = copy.deepcopy(idata)
    post = t.posterior
    values = {
        "pop_cl": TRUTH["cl"],
        "pop_v": TRUTH["v"],
        "omega_cl": TRUTH["omega_cl"],
        "omega_v": TRUTH["omega_v"],
        "sigma_prop_conc": TRUTH["prop"],
        "omega_study_cl": 1e-6,
        "eta_study_cl": 0.0,
        **changes,
    }
    for k, v in values.items():
        post[k].values[...] = v
    return t


@pytest.fixture(scope="module")
def study():
    return simulate_study()


@pytest.fixture(scope="module")
def fitted(study, tmp_path_factory):
    path = tmp_path_factory.mktemp("priors") / "priors.toml"
    path.write_text(PRIORS)
    return quick_fit(study, path)


@pytest.fixture(scope="module")
def truth_fit(fitted):
    return with_truth(fitted)


@pytest.fixture(scope="module")
def truth_ppc(truth_fit):
    return dx.posterior_predictive(truth_fit, n_replicates=400, seed=5)


# -- tables on hand-made posteriors ---------------------------------------------------------------
def _hand_made(n_chain=2, n_draw=500, S=40, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    # posterior means of the subject effects with SD exactly 0.15 and omega exactly 0.3:
    # shrinkage = 1 - 0.15 / 0.3 = 50%
    m = rng.normal(size=S)
    m = (m - m.mean()) / m.std(ddof=1) * 0.15
    eta = m[None, None, :] + 0.0 * rng.normal(size=(n_chain, n_draw, S))
    cl = rng.normal(2.0, 0.1, size=(n_chain, n_draw)) + offset * np.arange(n_chain)[:, None]
    post = {
        "pop_cl": cl,
        "omega_cl": np.full((n_chain, n_draw), 0.3),
        "eta_cl": eta,
        "sigma_prop_conc": np.abs(rng.normal(0.1, 0.01, size=(n_chain, n_draw))),
    }
    div = np.zeros((n_chain, n_draw), dtype=bool)
    div[0, :3] = True
    ss = {
        "diverging": div,
        "energy": rng.normal(size=(n_chain, n_draw)),
        "acceptance_rate": np.full((n_chain, n_draw), 0.9),
        "tree_depth": np.full((n_chain, n_draw), 4),
    }
    return az.from_dict(
        posterior=post,
        sample_stats=ss,
        coords={"subject": [f"s{i}" for i in range(S)]},
        dims={"eta_cl": ["subject"]},
        attrs={"method": "nuts"},
    )


def test_shrinkage_and_cv_match_their_formulas_on_a_hand_made_posterior():
    idata = _hand_made()
    np.testing.assert_allclose(dx.shrinkage(idata)["cl"], 50.0, rtol=1e-12)
    tab = dx.parameter_table(idata)
    row = tab.loc["omega_cl"]
    assert row["kind"] == "between-subject SD"
    np.testing.assert_allclose(row["cv_percent"], 100 * np.sqrt(np.exp(0.3**2) - 1), rtol=1e-12)
    np.testing.assert_allclose(row["cv_percent"], 30.69, atol=0.01)  # the familiar number
    np.testing.assert_allclose(row["shrinkage_percent"], 50.0, rtol=1e-12)
    # median and 90% interval of pop_cl are plain quantiles of all draws
    vals = idata.posterior["pop_cl"].values.ravel()
    np.testing.assert_allclose(tab.loc["pop_cl", "median"], np.median(vals))
    np.testing.assert_allclose(tab.loc["pop_cl", "q5"], np.quantile(vals, 0.05))
    np.testing.assert_allclose(tab.loc["pop_cl", "q95"], np.quantile(vals, 0.95))
    assert list(tab.index) == ["pop_cl", "omega_cl", "sigma_prop_conc"]
    # small omega: CV ~ omega
    assert abs(dx.cv_percent(0.05) - 5.0) < 0.01


def test_convergence_tables_on_hand_made_chains():
    good = _hand_made(n_draw=1000)
    ct = dx.convergence_table(good)
    assert ct.loc["pop_cl", "r_hat"] < 1.01 and ct.loc["pop_cl", "ess_bulk"] > 1000
    st = dx.sampler_table(good)
    assert list(st["divergent"]) == [3, 0] and list(st["tree_depth_max"]) == [4, 4]
    msgs = dx.convergence_messages(good)
    assert any("3 divergent transitions" in m for m in msgs)
    # chains that disagree: R-hat flags them
    bad = _hand_made(n_draw=1000, offset=1.0)
    assert dx.convergence_table(bad).loc["pop_cl", "r_hat"] > 1.5
    assert any("R-hat" in m and "pop_cl" in m for m in dx.convergence_messages(bad))
    assert not dx.convergence_table(bad).loc["pop_cl", "ok"]


# -- NPDE on known distributions ----------------------------------------------------------------
def test_npde_is_standard_normal_and_decorrelated_for_draws_of_the_same_distribution():
    rng = np.random.default_rng(1)
    G, n, K = 150, 5, 1000  # groups, observations per group, replicates
    C = 0.6 ** np.abs(np.subtract.outer(np.arange(n), np.arange(n)))  # AR(1) correlation
    L = np.linalg.cholesky(C)
    mu = np.linspace(1, 3, n)
    sims = mu + (rng.normal(size=(K, G, n)) @ L.T)
    obs = mu + rng.normal(size=(G, n)) @ L.T
    groups = np.repeat(np.arange(G), n)
    nd, pde = dx.npde(
        obs.ravel(), np.zeros(G * n, bool), np.full(G * n, -np.inf), sims.reshape(K, -1),
        groups, np.zeros(G * n, int),
    )  # fmt: skip
    assert stats.kstest(nd, "norm").pvalue > 0.01
    assert abs(nd.mean()) < 0.1 and abs(nd.std() - 1) < 0.08
    # decorrelated: successive NPDE within a group are uncorrelated, raw residuals are not
    r_npde = np.corrcoef(nd.reshape(G, n)[:, 0], nd.reshape(G, n)[:, 1])[0, 1]
    r_raw = np.corrcoef(obs[:, 0], obs[:, 1])[0, 1]
    assert abs(r_npde) < 0.2 and r_raw > 0.4
    # without decorrelation (NPD), pde of each observation is its rank among the replicates
    _, pde_nd = dx.npde(
        obs.ravel(), np.zeros(G * n, bool), np.full(G * n, -np.inf), sims.reshape(K, -1),
        groups, np.zeros(G * n, int), decorrelate=False,
    )  # fmt: skip
    want = np.mean(sims.reshape(K, -1) < obs.ravel(), axis=0)
    np.testing.assert_allclose(pde_nd, want, atol=1e-12)


def test_npde_with_censored_observations_stays_standard_normal():
    rng = np.random.default_rng(2)
    N, K = 3000, 500
    sims = rng.lognormal(0.0, 0.5, size=(K, N))
    obs = rng.lognormal(0.0, 0.5, size=N)
    lloq = np.full(N, 0.7)  # ~24% censored
    blq = obs < lloq
    nd, _ = dx.npde(
        np.where(blq, np.nan, obs), blq, lloq, sims, np.arange(N), np.ones(N, int), seed=3
    )
    assert 0.18 < blq.mean() < 0.3
    assert np.isfinite(nd).all()
    assert stats.kstest(nd, "norm").pvalue > 0.01
    # the imputed ones lie in the lower tail the LLOQ allows
    assert np.all(nd[blq] < stats.norm.ppf(np.mean(sims < 0.7)) + 0.15)


# -- on a fit whose posterior is the truth --------------------------------------------------------
def test_pred_and_ipred_are_the_model_evaluated_directly(truth_fit, truth_ppc, study):
    ds = pkpd.read_dataset(study)
    pad = ds.to_arrays()
    wt = pad.covariate("WT")
    m = load_model("one_cmt_iv")
    typical = {"cl": TRUTH["cl"] * (wt / 70.0) ** 0.75, "v": np.full(len(wt), TRUTH["v"])}
    pred = np.asarray(
        jax.jit(jax.vmap(m.predict))(typical, jax.tree.map(jnp.asarray, pad.data))["conc"]
    )
    s = np.asarray(truth_fit.posterior["subject"].values).tolist()
    subj = [s.index(x) for x in truth_ppc["subject"].values]
    t = truth_ppc["time"].values
    # the observation's point: the subject's point at that time
    pt = np.asarray(pad.data.point_time)
    point = [int(np.nonzero(np.isclose(pt[i], tt))[0][0]) for i, tt in zip(subj, t, strict=True)]
    np.testing.assert_allclose(truth_ppc["pred"].values, pred[subj, point], rtol=1e-9)
    # IPRED from theta_* of the fit (not replaced): the median over draws of the model at each
    # draw's individual parameters
    post = truth_fit.posterior
    th = {p: post[f"theta_{p}"].values.reshape(-1, len(s)) for p in ("cl", "v")}
    sub = jax.tree.map(jnp.asarray, pad.data)
    ip = np.asarray(jax.jit(jax.vmap(lambda p: jax.vmap(m.predict)(p, sub)["conc"]))(th))
    np.testing.assert_allclose(
        truth_ppc["ipred"].values, np.median(ip[:, subj, point], axis=0), rtol=1e-9
    )


def test_time_after_dose(truth_ppc):
    st = truth_ppc["study"].values
    t, tad = truth_ppc["time"].values, truth_ppc["tad"].values
    a, b = st == "A", st == "B"
    np.testing.assert_allclose(tad[a], t[a])
    np.testing.assert_allclose(tad[b], np.where(t[b] >= 12, t[b] - 12, t[b]))


def test_npde_of_data_simulated_from_the_model_are_standard_normal(truth_fit, truth_ppc):
    nd = truth_ppc["npde"].values
    assert np.isfinite(nd).all()
    assert stats.kstest(nd, "norm").pvalue > 0.01
    summ = dx.npde_summary(truth_fit, ppc=truth_ppc)
    assert summ.loc["conc", "p_global"] > 0.01
    assert abs(summ.loc["conc", "mean"]) < 0.15 and abs(summ.loc["conc", "variance"] - 1) < 0.2


def test_vpc_of_data_simulated_from_the_model_covers_90_percent(truth_fit, truth_ppc):
    for study in ("A", "B"):
        tab = dx.vpc_table(truth_fit, "conc", study=study, ppc=truth_ppc)
        assert 0.84 <= dx.vpc_coverage(tab) <= 0.96, (study, dx.vpc_coverage(tab))
        # observed medians inside the simulated 90% interval of the median in most bins
        inside = (tab["obs_p50"] >= tab["sim_p50_lo"]) & (tab["obs_p50"] <= tab["sim_p50_hi"])
        known = tab["obs_p50"].notna()
        assert inside[known].mean() >= 0.75
        # the fraction BLQ simulated matches the observed one overall
        n = tab["n_obs"]
        obs_blq = (tab["blq_obs"] * n).sum() / n.sum()
        sim_blq = (tab["blq_sim_med"] * n).sum() / n.sum()
        assert abs(obs_blq - sim_blq) < 0.05, (obs_blq, sim_blq)
    a = dx.vpc_table(truth_fit, "conc", study="A", ppc=truth_ppc)
    assert a["n_blq"].sum() > 5 and a["n_obs"].sum() == 30 * 8
    # where BLQ data decide the 5th percentile, it is not shown
    last = a.iloc[-1]
    assert last["blq_obs"] > 0.05 and np.isnan(last["obs_p5"])
    pc = dx.vpc_table(truth_fit, "conc", prediction_corrected=True, x="tad", ppc=truth_ppc)
    assert 0.84 <= dx.vpc_coverage(pc) <= 0.96


def test_a_wrong_clearance_is_detected(fitted):
    wrong = with_truth(fitted, pop_cl=2 * TRUTH["cl"])
    ppc = dx.posterior_predictive(wrong, n_replicates=200, seed=5)
    assert dx.npde_summary(wrong, ppc=ppc).loc["conc", "p_global"] < 1e-3
    assert dx.vpc_coverage(dx.vpc_table(wrong, "conc", study="A", ppc=ppc)) < 0.75


def test_posterior_predictive_is_reproducible(truth_fit):
    a = dx.posterior_predictive(truth_fit, n_replicates=20, n_draws=10, seed=9)
    b = dx.posterior_predictive(truth_fit, n_replicates=20, n_draws=10, seed=9, chunk=7)
    np.testing.assert_array_equal(a["y_sim"].values, b["y_sim"].values)
    c = dx.posterior_predictive(truth_fit, n_replicates=20, n_draws=10, seed=10)
    assert not np.allclose(a["y_sim"].values, c["y_sim"].values)


# -- a real (quick) fit -------------------------------------------------------------------------
def test_parameter_table_of_a_fit(fitted):
    tab = dx.parameter_table(fitted)
    assert {"pop_cl", "pop_v", "omega_cl", "omega_v", "omega_study_cl", "sigma_prop_conc"} <= set(
        tab.index
    )
    assert tab.loc["pop_cl", "unit"] == "L/h"
    assert tab.loc["pop_cl", "prior"] == "lognormal(median=2, sd_log=0.5)"
    assert tab.loc["omega_cl", "cv_percent"] > 0 and np.isfinite(
        tab.loc["omega_cl", "shrinkage_percent"]
    )
    assert np.isnan(tab.loc["pop_cl", "r_hat"])  # one chain (MAP + Laplace)
    assert "beta_cl_wt" not in tab.index  # fixed effect: not a posterior variable
    msgs = dx.convergence_messages(fitted)
    assert len(msgs) == 1 and "Laplace" in msgs[0]
    assert dx.sampler_table(fitted).empty
    data = dx.data_table(fitted)
    assert (
        data.loc[("A", "conc"), "subjects"] == 30 and data.loc[("B", "conc"), "observations"] == 240
    )


def test_prior_samples_follow_the_priors(fitted):
    draws = dx.prior_samples(fitted, n=20000, seed=1)
    assert set(draws) == {"pop_cl", "pop_v", "omega_cl", "omega_v", "omega_study_cl",
                          "sigma_prop_conc"}  # fmt: skip
    assert stats.kstest(draws["pop_cl"], stats.lognorm(s=0.5, scale=2.0).cdf).pvalue > 0.001
    assert stats.kstest(draws["omega_cl"], stats.halfnorm(scale=0.5).cdf).pvalue > 0.001
    tab = dx.prior_posterior_table(fitted)
    assert tab.loc["pop_cl", "sd_ratio"] < 0.5  # the data inform clearance


def test_plots_are_figures_outside_pyplot(fitted, truth_ppc, tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    figs = [
        dx.gof(fitted, "conc", ppc=truth_ppc),
        dx.gof(fitted, "conc", x="tad", ppc=truth_ppc),
        dx.vpc(fitted, "conc", ppc=truth_ppc),
        dx.vpc(fitted, "conc", prediction_corrected=True, by_study=False, ppc=truth_ppc),
        dx.individual_fits(fitted, "conc", ppc=truth_ppc),
        dx.prior_posterior(fitted),
    ]
    for k, fig in enumerate(figs):
        assert isinstance(fig, Figure) and fig.axes
        fig.savefig(tmp_path / f"f{k}.png")
        assert (tmp_path / f"f{k}.png").stat().st_size > 5000
    assert plt.get_fignums() == before  # nothing registered with pyplot, nothing to show
    with pytest.raises(ValueError, match="was not fitted"):
        dx.gof(fitted, "s6k", ppc=truth_ppc)
    with pytest.raises(ValueError, match="no conc observations"):
        dx.vpc_table(fitted, "conc", study="Z", ppc=truth_ppc)


# -- simulations ----------------------------------------------------------------------------
def test_attainment_and_exposure_tables_match_hand_computations():
    sim = fake_simulation()
    tab = dx.attainment_table(sim, "s6k_inhibition_trough_ss >= 80").set_index("regimen")
    regs = list(sim.regimen.values)
    x = sim["s6k_inhibition_trough_ss"].values  # [R, D, S]
    p = (x >= 80).mean(axis=2)  # [R, D]: fraction of subjects per draw
    for k, r in enumerate(regs):
        assert tab.loc[r, "probability"] == pytest.approx(np.median(p[k]))
        assert tab.loc[r, "ci_low"] == pytest.approx(np.quantile(p[k], 0.05))
        assert tab.loc[r, "ci_high"] == pytest.approx(np.quantile(p[k], 0.95))
    want = pd.Series(np.median(p, axis=1), index=regs).sort_values(ascending=False, kind="stable")
    assert list(tab.index) == list(want.index)  # ranked
    ex = dx.exposure_table(sim)
    v = sim["auc_tau_sirolimus_ss"].sel(regimen="75 mg q1w").values.ravel()
    row = ex.loc[("75 mg q1w", "auc_tau_sirolimus_ss")]
    assert row["median"] == pytest.approx(np.median(v))
    assert row["low"] == pytest.approx(np.quantile(v, 0.05))
    assert row["units"] == "ng.h/mL"
    with pytest.raises(ValueError, match="cannot read"):
        dx.attainment_table(sim, "s6k above 80")
    with pytest.raises(ValueError, match="no metric 'nope'"):
        dx.attainment_table(sim, "nope > 1")


def test_simulation_plots():
    sim = fake_simulation()
    figs = [
        dx.regimen_profiles(sim),
        dx.exposure_by_regimen(sim),
        dx.exposure_response(
            sim, exposure="auc_tau_sirolimus_ss", response="s6k_inhibition_trough_ss"
        ),  # fmt: skip
        dx.target_attainment(
            sim, ["s6k_inhibition_trough_ss >= 80", "cmax_temsirolimus_c1 <= 3000"]
        ),  # fmt: skip
    ]
    for fig in figs:
        assert isinstance(fig, Figure) and fig.axes
    assert len(figs[3].axes) == 2
