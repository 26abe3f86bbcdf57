"""Correlated occasion effects (the priors' ``[correlation_iov]``): within an occasion the
occasion effects of several parameters share an LKJ-distributed correlation,
κ_ik = diag(ω_iov) L z_ik. Recovery of a known correlation on a simulated one-compartment
study (40 subjects × 4 weekly occasions, clearance and volume varying together between
occasions), the layout of the fit, simulations that draw new occasions with the fitted
correlation, and the checks on the priors section."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import pkpd
from pkpd.inference.priors import PriorsError, load_priors, priors_toml
from pkpd.models import load_model

from studies import weekly_occasions_design

TRUTH = {"cl": 2.0, "v": 30.0, "omega_cl": 0.3, "omega_v": 0.2, "iov_cl": 0.3, "iov_v": 0.25,
         "rho": 0.7, "prop": 0.1}  # fmt: skip
S, N_OCC = 40, 4
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
iov = { family = "halfnormal", scale = 0.5 }

[residual.conc]
model = "proportional"
unit = "ng/mL"
proportional = { family = "halfnormal", scale = 0.3 }

[correlation_iov]
parameters = ["cl", "v"]
lkj_eta = 2.0
"""


@pytest.fixture(scope="module")
def drawn():
    """The design and the occasion effects drawn for it: κ_ik ~ N(0, Σ) with Σ from the SDs
    and correlation of TRUTH (numpy's multivariate normal, independent of pkpd)."""
    rng = np.random.default_rng(7)
    df = weekly_occasions_design(S, N_OCC, TIMES)
    sd = np.array([TRUTH["iov_cl"], TRUTH["iov_v"]])
    cov = np.outer(sd, sd) * np.array([[1.0, TRUTH["rho"]], [TRUTH["rho"], 1.0]])
    eta = rng.normal(0.0, [TRUTH["omega_cl"], TRUTH["omega_v"]], size=(S, 2))
    kappa = rng.multivariate_normal([0.0, 0.0], cov, size=(S, N_OCC))
    return df, eta, kappa, rng


@pytest.fixture(scope="module")
def study(drawn):
    df, eta, kappa, rng = drawn
    pad = pkpd.read_dataset(df).to_arrays()
    params = {
        "cl": jnp.asarray(TRUTH["cl"] * np.exp(eta[:, :1] + kappa[..., 0])),
        "v": jnp.asarray(TRUTH["v"] * np.exp(eta[:, 1:] + kappa[..., 1])),
    }
    m = load_model("one_cmt_iv")
    pred = np.asarray(jax.vmap(m.predict)(params, jax.tree.map(jnp.asarray, pad.data))["conc"])
    y = pred * np.exp(rng.normal(0.0, TRUTH["prop"], pred.shape))
    df = df.copy()
    df.loc[df.EVID == 0, "DV"] = y[np.asarray(pad.data.point_mask)]
    return df


@pytest.fixture(scope="module")
def priors_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("iov_corr") / "priors.toml"
    path.write_text(PRIORS)
    return path


@pytest.fixture(scope="module")
def fit(study, priors_path):
    return pkpd.fit(
        "one_cmt_iv", study, priors_path, chains=2, warmup=250, draws=250, seed=1,
        progress_bar=False,
    )  # fmt: skip


def test_the_drawn_effects_are_typical(drawn):
    """The sample correlation of the drawn κ within a standard error or two of the truth, so a
    truth outside a 90% interval points at the fit, not at the draw (measured: 0.678)."""
    _, _, kappa, _ = drawn
    r = np.corrcoef(kappa.reshape(-1, 2).T)[0, 1]
    se = (1 - TRUTH["rho"] ** 2) / np.sqrt(S * N_OCC)
    assert abs(r - TRUTH["rho"]) < 2 * se, r


def test_the_correlation_of_occasion_effects_is_recovered(fit):
    """Measured (seed 1, 2 × (250 + 250)): correlation 0.65 (90% 0.54-0.74) against 0.7,
    ω_iov of CL 0.279 and of V 0.214 (sample SDs of the drawn κ: 0.287, 0.218)."""
    from pkpd import diagnostics as dx

    post = fit.posterior
    assert post["corr_iov_cholesky"].dims[2:] == ("corr_iov_row", "corr_iov_col")
    assert list(post["corr_iov_row"].values) == ["cl", "v"]
    for p in ("cl", "v"):
        assert post[f"kappa_{p}"].dims[2:] == ("subject", "occasion")
    table = dx.parameter_table(fit)
    row = table.loc["corr_iov_cl_v"]
    assert row["kind"] == "between-occasion correlation"
    assert row["prior"] == "lkj(eta=2)"
    assert row["q5"] <= TRUTH["rho"] <= row["q95"], row
    assert row["q5"] > 0.3  # clearly away from 0
    # the correlation is L Lᵀ of the Cholesky factor, draw by draw
    L = post["corr_iov_cholesky"].values
    r = (L @ np.swapaxes(L, -1, -2))[..., 0, 1]
    np.testing.assert_allclose(np.median(r), row["median"], rtol=1e-12)
    for p in ("cl", "v"):
        om = float(post[f"omega_iov_{p}"].median())
        assert abs(om / TRUTH[f"iov_{p}"] - 1) < 0.2, (p, om)
        assert float(post[f"omega_{p}"].median()) == pytest.approx(TRUTH[f"omega_{p}"], rel=0.35)
    assert float(fit.sample_stats["diverging"].mean()) <= 0.02


def test_simulated_occasions_carry_the_fitted_correlation(fit):
    """A simulation draws a new κ per occasion with each draw's ω_iov and correlation: the
    within-subject cross-products of log CL and log V, divided by each draw's
    ω_cl ω_v ρ, average 1 (without the correlation they would average 0)."""
    from pkpd.simulate import simulate

    sim = simulate(fit, "100 mg q1w x4", n_draws=40, n_subjects=50, times=[24.0],
                   seed=3, progress_bar=False)  # fmt: skip
    assert sim["param_cl"].dims == ("draw", "subject", "occasion")
    assert sim["param_v"].dims == ("draw", "subject", "occasion")
    post = fit.posterior
    idx = sim["posterior_index"].values

    def flat(name):
        v = post[name].values
        return v.reshape((-1,) + v.shape[2:])[idx]

    L = flat("corr_iov_cholesky")
    rho = (L @ np.swapaxes(L, -1, -2))[:, 0, 1]
    scale = flat("omega_iov_cl") * flat("omega_iov_v") * rho  # [draw]
    lc, lv = np.log(sim["param_cl"].values), np.log(sim["param_v"].values)
    dc, dv = lc - lc.mean(2, keepdims=True), lv - lv.mean(2, keepdims=True)
    cross = (dc * dv).sum(2) / (N_OCC - 1)  # [draw, subject]: unbiased within-subject covariance
    ratio = float(np.mean(cross / scale[:, None]))
    assert 0.85 < ratio < 1.15, ratio  # 2,000 estimates with 3 df each: SE ~0.03


def test_predictive_checks_draw_correlated_new_occasions(fit):
    """NPDE of the fitted data ~N(0, 1) with the replicates' new correlated κ."""
    from pkpd import diagnostics as dx

    ppc = dx.posterior_predictive(fit, n_replicates=200, n_draws=50, seed=3)
    assert abs(float(ppc.npde.mean())) < 0.15
    assert 0.9 < float(ppc.npde.std()) < 1.12


def test_new_occasion_effects_have_the_correlation_of_the_cholesky_factor():
    """pkpd.inference.hierarchy.new_occasion_effects against numpy: 200,000 normals mixed by L
    have covariance diag(ω) L Lᵀ diag(ω); an uncorrelated parameter keeps ω z."""
    from pkpd.inference.hierarchy import new_occasion_effects

    R = np.array([[1.0, -0.5, 0.3], [-0.5, 1.0, 0.2], [0.3, 0.2, 1.0]])
    L = np.linalg.cholesky(R)
    om = {"a": 0.2, "b": 0.4, "c": 0.1, "d": 0.3}
    draw = {f"omega_iov_{p}": v for p, v in om.items()} | {"corr_iov_cholesky": jnp.asarray(L)}
    z = jax.random.normal(jax.random.PRNGKey(0), (4, 1000, 200))
    # parameters in one order, the correlated block in another
    kappa = new_occasion_effects(draw, ["d", "a", "b", "c"], z, correlated=["a", "b", "c"])
    np.testing.assert_allclose(np.asarray(kappa["d"]), 0.3 * np.asarray(z[0]), rtol=1e-14)
    x = np.stack([np.asarray(kappa[p]).reshape(-1) for p in "abc"])
    sd = np.array([om[p] for p in "abc"])
    np.testing.assert_allclose(np.cov(x), np.outer(sd, sd) * R, atol=4e-4)
    valid = np.zeros((1000, 200), dtype=bool)
    valid[:, :3] = True
    masked = new_occasion_effects(draw, ["d", "a", "b", "c"], z, valid, ["a", "b", "c"])
    assert np.all(np.asarray(masked["b"])[:, 3:] == 0.0)
    np.testing.assert_array_equal(np.asarray(masked["b"])[:, :3], np.asarray(kappa["b"])[:, :3])


def test_correlation_iov_section_is_checked_and_round_trips(tmp_path):
    import tomllib

    path = tmp_path / "p.toml"
    path.write_text(PRIORS)
    pri = load_priors(path)
    assert pri.correlation_iov == {"parameters": ["cl", "v"], "lkj_eta": 2.0}
    back = tomllib.loads(priors_toml(pri.raw))
    assert back["correlation_iov"] == {"parameters": ["cl", "v"], "lkj_eta": 2.0}
    # removing one parameter's occasion variability removes the correlation (one left)
    assert pri.without_iov(["v"]).correlation_iov == {}
    assert "correlation_iov" not in pri.without_iov(["v"]).raw
    # every problem of the section at once, each named
    bad = PRIORS.replace('parameters = ["cl", "v"]\nlkj_eta = 2.0',
                         'parameters = ["cl", "ka"]\nlkj_eta = 0\nshape = 3')  # fmt: skip
    path.write_text(bad)
    with pytest.raises(PriorsError) as err:
        load_priors(path)
    msg = str(err.value)
    assert "[correlation_iov]: parameter 'ka' has no iov prior to correlate" in msg
    assert "lkj_eta must be a number > 0" in msg
    assert "unknown key(s) shape" in msg
    # a parameter with between-subject but no occasion variability cannot be listed
    path.write_text(PRIORS.replace('iov = { family = "halfnormal", scale = 0.5 }\n\n[residual',
                                   '\n[residual'))  # fmt: skip
    with pytest.raises(PriorsError, match="parameter 'v' has no iov prior to correlate"):
        load_priors(path)


def test_the_quick_fit_lays_correlated_occasion_effects_out_per_subject(study, priors_path):
    """method="map" integrates each subject's effects by Laplace: the [subject, occasion, k]
    normals of correlated occasion effects become k·O columns of the subject's block and come
    back in their own shape (every site of the model round-trips exactly)."""
    import dataclasses

    from pkpd.inference import fit as F
    from pkpd.inference.laplace import LaplaceProblem
    from pkpd.inference.output import _population_sites

    spec = F.prepare("one_cmt_iv", study, priors_path)
    obs = jnp.asarray(spec.obs_y)
    nm = F.build_model(dataclasses.replace(spec, parameterization="noncentered"))
    x, objective = F._valid_start(nm, obs, jax.random.PRNGKey(0))
    proto = objective.unravel(jnp.asarray(x))
    assert proto["z_iov_corr"].shape == (S, N_OCC, 2)
    pb = LaplaceProblem(nm, obs, proto, spec.obs_subject, _population_sites(nm, obs), S)
    assert "corr_iov_cholesky" in pb.pop_sites and "z_iov_corr" in pb.subj_sites
    assert pb.k == 2 + 2 * N_OCC  # z_cl, z_v, and 4 occasions x 2 parameters
    back = pb.params(jnp.asarray(pb.theta0), jnp.asarray(pb.z0))
    assert set(back) == set(proto)
    for k, v in proto.items():
        np.testing.assert_array_equal(np.asarray(back[k]), np.asarray(v), err_msg=k)
