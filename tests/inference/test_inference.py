"""Inference: the likelihood against scipy, recovery, reproducibility, save/load, failures."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
import xarray as xr

import pkpd
from pkpd.inference.fit import FitError, fit, load_fit, prepare, save_fit
from pkpd.inference.likelihood import LOGIT, LOGNORMAL, NORMAL, pointwise_loglik
from pkpd.models import Model, load_model

from paths import ROOT


# -- likelihood ----------------------------------------------------------------------------------
@pytest.mark.parametrize("use_static", [False, True], ids=["general", "static-kinds"])
def test_pointwise_loglik_matches_scipy_for_every_error_model(use_static):
    y = np.array([3.0, 10.0, 0.7])
    f = np.array([2.5, 12.0, 1.0])
    a, b, s = 0.4, 0.15, 0.3
    one = np.ones(3)

    def ll(kind, add, prop, sig, lloq=None, blq=None):
        lloq = np.full(3, np.nan) if lloq is None else lloq
        blq = np.zeros(3, bool) if blq is None else blq
        static = ((kind,), bool(blq.any())) if use_static else None
        return np.asarray(
            pointwise_loglik(
                y, f, jnp.full(3, kind), add * one, prop * one, sig * one, lloq, blq, static=static
            )
        )

    np.testing.assert_allclose(ll(NORMAL, a, 0, 1), st.norm(f, a).logpdf(y), rtol=1e-12)
    np.testing.assert_allclose(ll(NORMAL, 0, b, 1), st.norm(f, b * f).logpdf(y), rtol=1e-12)
    sd = np.sqrt(a**2 + (b * f) ** 2)
    np.testing.assert_allclose(ll(NORMAL, a, b, 1), st.norm(f, sd).logpdf(y), rtol=1e-12)
    # lognormal: density of y with log y ~ N(log f, s)
    np.testing.assert_allclose(
        ll(LOGNORMAL, 0, 0, s), st.lognorm(s=s, scale=f).logpdf(y), rtol=1e-12
    )
    # logit for percentages: logit(y/100) ~ N(logit(f/100), s); density on y
    yp, fp = np.array([12.7, 16.8, 50.0]), np.array([14.0, 15.0, 45.0])
    lg = lambda x: np.log(x / (100 - x))  # noqa: E731
    want = st.norm(lg(fp), s).logpdf(lg(yp)) + np.log(100 / (yp * (100 - yp)))
    got = pointwise_loglik(
        yp,
        fp,
        jnp.full(3, LOGIT),
        0 * one,
        0 * one,
        s * one,
        np.full(3, np.nan),
        np.zeros(3, bool),
        static=((LOGIT,), False) if use_static else None,
    )
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-10)
    # M3: censored below LLOQ
    lloq = np.array([1.0, 1.0, 1.0])
    blq = np.array([True, True, True])
    np.testing.assert_allclose(
        ll(NORMAL, a, b, 1, lloq, blq), st.norm(f, sd).logcdf(lloq), rtol=1e-12
    )
    np.testing.assert_allclose(
        ll(LOGNORMAL, 0, 0, s, lloq, blq), st.lognorm(s=s, scale=f).logcdf(lloq), rtol=1e-12
    )


# -- a small simulated study -------------------------------------------------------------------
TRUTH = {"cl": 2.0, "v": 30.0, "omega_cl": 0.3, "omega_v": 0.2, "prop": 0.1}


@pytest.fixture(scope="module")
def study(one_cmt_iv_design):
    rng = np.random.default_rng(7)
    S = 20
    df = one_cmt_iv_design(S, [0.25, 1, 2, 4, 8, 12, 24])
    pad = pkpd.read_dataset(df).to_arrays()
    eta = rng.normal(0, [TRUTH["omega_cl"], TRUTH["omega_v"]], size=(S, 2))
    params = {"cl": TRUTH["cl"] * np.exp(eta[:, 0]), "v": TRUTH["v"] * np.exp(eta[:, 1])}
    m = load_model("one_cmt_iv")
    pred = np.asarray(jax.vmap(m.predict)(params, jax.tree.map(jnp.asarray, pad.data))["conc"])
    y = pred * np.exp(rng.normal(0, TRUTH["prop"], pred.shape))
    df.loc[df.EVID == 0, "DV"] = y[np.asarray(pad.data.point_mask)]
    return df


@pytest.fixture(scope="module")
def nuts_fit(study):
    return fit("one_cmt_iv", study, chains=2, warmup=250, draws=250, seed=3, progress_bar=False)


def test_recovers_the_truth(nuts_fit):
    post = nuts_fit.posterior
    covered = []
    for name, true in [
        ("pop_cl", 2.0),
        ("pop_v", 30.0),
        ("omega_cl", 0.3),
        ("omega_v", 0.2),
        ("sigma_prop_conc", 0.1),
    ]:
        lo, hi = np.quantile(post[name].values, [0.05, 0.95])
        covered.append(lo <= true <= hi)
    assert sum(covered) >= 4, covered  # 90% intervals: at least 4 of 5 cover the truth
    assert not np.asarray(nuts_fit.sample_stats["diverging"]).any()


def test_inference_data_schema(nuts_fit):
    idata = nuts_fit
    for g in ("posterior", "sample_stats", "log_likelihood", "observed_data", "constant_data"):
        assert g in idata.groups()
    post = idata.posterior
    assert post["pop_cl"].attrs["units"] == "L/h"
    assert list(post["eta_cl"].dims) == ["chain", "draw", "subject"]
    assert list(post.subject.values[:3]) == ["1", "2", "3"]
    assert idata.log_likelihood["y"].shape == (2, 250, 140)
    # the adapted step size: fixed after warmup, one per chain
    eps = idata.sample_stats["step_size"].values
    assert eps.shape == (2, 250) and np.all(eps > 0) and np.all(eps == eps[:, :1])
    assert idata.attrs["model"] == "one_cmt_iv" and len(idata.attrs["data_sha256"]) == 64
    # the individual parameters are the typical value times exp(eta)
    np.testing.assert_allclose(
        post["theta_cl"].values,
        post["pop_cl"].values[..., None] * np.exp(post["eta_cl"].values),
        rtol=1e-10,
    )


def test_save_load_round_trip_and_bad_files(nuts_fit, tmp_path):
    path = save_fit(nuts_fit, tmp_path / "fit.nc")
    back = load_fit(path)
    for g in nuts_fit.groups():
        xr.testing.assert_identical(getattr(nuts_fit, g), getattr(back, g))
    assert back.attrs["model"] == "one_cmt_iv"
    assert not list(tmp_path.glob("*.tmp"))
    other = tmp_path / "other.nc"
    xr.Dataset({"a": ("x", [1.0])}).to_netcdf(other)
    with pytest.raises(FitError, match="not a pkpd fit"):
        load_fit(other)
    junk = tmp_path / "junk.nc"
    junk.write_text("hello")
    with pytest.raises(FitError, match="not a netCDF fit file"):
        load_fit(junk)


def test_chains_without_a_device_each_run_one_after_another_compiled(nuts_fit):
    from pkpd.inference.fit import chain_method

    assert chain_method(1, devices=1, platform="cpu") == "sequential"
    assert chain_method(4, devices=4, platform="cpu") == "parallel"
    assert chain_method(4, devices=2, platform="gpu") == "vectorized"
    assert callable(chain_method(4, devices=2, platform="cpu"))
    # this process has one device: the fixture's two chains went through the compiled map, each
    # with its own key and start (not copies of one chain)
    assert jax.local_device_count() == 1
    cl = nuts_fit.posterior["pop_cl"].values
    assert cl.shape == (2, 250) and not np.allclose(cl[0], cl[1])


def test_one_chain_runs_as_one_compiled_program(study, monkeypatch):
    """A lone chain's initialisation is traced into the compiled program (NumPyro would run it
    op by op, outside any program: 20 s against 5.5 s for this fit's NUTS phase on the
    project's machine), and its draws are a real chain: they move, and reproduce."""
    from numpyro.infer import NUTS

    seen = []
    original = NUTS.init

    def init(self, rng_key, *a, **k):
        seen.append(isinstance(rng_key, jax.core.Tracer))
        return original(self, rng_key, *a, **k)

    monkeypatch.setattr(NUTS, "init", init)
    kw = dict(chains=1, warmup=30, draws=20, seed=11, progress_bar=True)
    a = fit("one_cmt_iv", study, **kw)
    assert seen == [True]
    cl = a.posterior["pop_cl"].values
    assert cl.shape == (1, 20) and np.unique(cl).size > 10
    b = fit("one_cmt_iv", study, **kw)
    np.testing.assert_array_equal(cl, b.posterior["pop_cl"].values)


def test_same_seed_same_draws(study):
    a = fit(
        "one_cmt_iv",
        study,
        chains=1,
        warmup=30,
        draws=20,
        seed=11,
        progress_bar=False,
        map_steps=200,
    )
    b = fit(
        "one_cmt_iv",
        study,
        chains=1,
        warmup=30,
        draws=20,
        seed=11,
        progress_bar=False,
        map_steps=200,
    )
    np.testing.assert_array_equal(a.posterior["pop_cl"].values, b.posterior["pop_cl"].values)


@dataclass(frozen=True)
class FailsAboveCl(Model):
    """one_cmt_iv whose 'solver' fails whenever cl > 2.6 (as an ODE failure would)."""

    name: str = "one_cmt_iv"

    @property
    def parameters(self):
        return {"cl": "L/h", "v": "L"}

    @property
    def endpoint_units(self):
        return {"conc": "ng/mL"}

    @property
    def compartments(self):
        return {1: "central"}

    def predict(self, params, subject):
        out = dict(load_model("one_cmt_iv").predict(params, subject))
        out["ok"] = params["cl"] < 2.6
        out["conc"] = jnp.where(out["ok"], out["conc"], jnp.nan)
        return out


jax.tree_util.register_static(FailsAboveCl)


def test_failing_solve_does_not_crash_sampling(study):
    idata = fit(
        FailsAboveCl(),
        study,
        chains=1,
        warmup=100,
        draws=100,
        seed=5,
        progress_bar=False,
        map_steps=300,
    )
    theta = idata.posterior["theta_cl"].values
    assert np.all(np.isfinite(theta)) and np.all(theta < 2.6)


def test_setup_errors_are_clear(study):
    bad = study.copy()
    bad["DVID"] = np.where(bad.EVID == 0, 4, np.nan)  # vegf observations for a PK model
    with pytest.raises(FitError, match="endpoint"):
        prepare("one_cmt_iv", pkpd.read_dataset(bad))
    with pytest.raises(FitError, match="method"):
        fit("one_cmt_iv", study, method="vb")
    with pytest.raises(FitError, match="mass_matrix='full'; expected 'diagonal'"):
        fit("one_cmt_iv", study, mass_matrix="full")


def test_correlated_subject_effects_with_lkj(study, tmp_path):
    text = (Path(pkpd.__file__).resolve().parents[1] / "priors" / "one_cmt_iv.toml").read_text()
    text += '\n[correlation]\nparameters = ["cl", "v"]\nlkj_eta = 2.0\n'
    f = tmp_path / "corr.toml"
    f.write_text(text)
    idata = fit(
        "one_cmt_iv",
        study,
        f,
        chains=1,
        warmup=150,
        draws=100,
        seed=2,
        progress_bar=False,
        map_steps=300,
    )
    post = idata.posterior
    assert list(post["corr_cholesky"].dims) == ["chain", "draw", "corr_row", "corr_col"]
    L = post["corr_cholesky"].values.reshape(-1, 2, 2)
    np.testing.assert_allclose(np.einsum("nij,nkj->nik", L, L)[:, [0, 1], [0, 1]], 1.0, rtol=1e-10)
    # the individual effects are still exp(eta) around the typical value
    np.testing.assert_allclose(
        post["theta_v"].values,
        post["pop_v"].values[..., None] * np.exp(post["eta_v"].values),
        rtol=1e-10,
    )


# -- the fit's predictor ---------------------------------------------------------------------------
def test_fit_predictor_equals_plain_per_subject_predictions():
    """The fit's predictor (subjects grouped by endpoint, trimmed, records at equal times
    predicted once, only dose-point pairs that act evaluated, the PD grid solver) gives, at every
    observation, what the hand-wired model predicts for each subject on its own full records
    with the adaptive ODE solver, at the generator's true individual parameters."""
    from pkpd.inference.fit import observation_predictor
    from pkpd.models.temsirolimus import TemsirolimusModel

    root = ROOT / "datasets" / "temsirolimus"
    spec = prepare("temsirolimus", root / "temsirolimus_small.csv")
    truth = pd.read_csv(root / "truth_subjects.csv").set_index("ID")
    ids = [int(float(s)) for s in spec.padded.subject_ids]
    names = list(spec.model.parameters)
    params = {p: jnp.asarray(truth.loc[ids, p].to_numpy(float)) for p in names if p in truth}
    got = jax.jit(observation_predictor(spec))(params)  # compiled (op by op: 73 s in the suite)
    # the hand-wired class with its adaptive VEGF/PD-1 solver (the data generator's model) as
    # the reference for the registered model (written with blocks)
    model = TemsirolimusModel(pd_solver="diffrax").with_endpoints(spec.model.endpoints)
    ref = jax.jit(jax.vmap(model.predict))(params, jax.tree.map(jnp.asarray, spec.padded.data))
    assert bool(np.all(np.asarray(got["ok"])))
    seen = set()
    for j, e in enumerate(spec.endpoints):
        sel = spec.obs_endpoint == j
        s, p = spec.obs_subject[sel], spec.obs_point[sel]
        a = np.asarray(got[e])[s, p]
        b = np.asarray(ref[e])[s, p]
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * np.abs(b).max(), err_msg=e)
        seen.add(e)
    assert seen == {"temsirolimus", "sirolimus", "s6k", "vegf", "pd1_cd8"}


# -- parameterisation ------------------------------------------------------------------------------
def test_auto_parameterization_follows_how_much_the_data_say(study):
    """Seven samples per subject inform each CL and V: both centred. One late sample per
    subject barely separates V from CL: the non-centred form is kept for V in at least some
    subjects. The choice is recorded in the fit, and the sampler runs with it."""
    rich = fit("one_cmt_iv", study, chains=1, warmup=20, draws=10, seed=1, progress_bar=False)
    assert rich.attrs["parameterization"] == "auto"
    assert sorted(json.loads(rich.attrs["centered_parameters"])) == ["cl", "v"]
    sparse_df = study[(study.EVID == 1) | (study.TIME == 24)]
    sparse = fit("one_cmt_iv", sparse_df, chains=1, warmup=20, draws=10, seed=1, progress_bar=False)
    # subject by subject: no longer every subject's V (here 9 of 20 stay centred: with one
    # sample, how well V is pinned depends on the subject's own elimination rate)
    assert json.loads(rich.attrs["centered_subjects"]) == {"cl": 20, "v": 20}
    assert json.loads(sparse.attrs["centered_subjects"])["v"] < 20
    forced = fit(
        "one_cmt_iv",
        sparse_df,
        chains=1,
        warmup=20,
        draws=10,
        seed=1,
        progress_bar=False,
        parameterization="centered",
    )
    assert sorted(json.loads(forced.attrs["centered_parameters"])) == ["cl", "v"]


def test_auto_checks_its_centring_by_a_noncentred_rerun(study, monkeypatch):
    """When auto's chains diverge, the fit is rerun with every subject effect non-centred and
    the run with fewer divergences is kept. The threshold is forced to zero here so the rerun
    always happens; the rerun must be exactly ``parameterization="noncentered"`` with the same
    seed, and the kept run the one whose divergence count is lower."""
    import pkpd.inference.fit as F
    import pkpd.inference.geometry as G

    sparse = study[(study.EVID == 1) | (study.TIME == 24) | (study.TIME == 1)]
    kw = dict(chains=1, warmup=30, draws=20, seed=4, progress_bar=False)
    nc = fit("one_cmt_iv", sparse, parameterization="noncentered", **kw)
    monkeypatch.setattr(G, "FALLBACK_DIVERGENCE_FRACTION", float("inf"))
    auto = fit("one_cmt_iv", sparse, **kw)
    assert json.loads(auto.attrs["parameterization_check"]) == {}
    assert json.loads(auto.attrs["centered_parameters"]), "the test needs auto to centre"
    monkeypatch.setattr(F, "_fallback_centered", lambda spec, *a: list(spec.centered))
    checked = fit("one_cmt_iv", sparse, **kw)
    check = json.loads(checked.attrs["parameterization_check"])
    n_auto = int(auto.sample_stats["diverging"].sum())
    n_nc = int(nc.sample_stats["diverging"].sum())
    assert check["divergences_centered"] == n_auto
    assert check["divergences_noncentered"] == n_nc
    kept = nc if n_nc < n_auto else auto
    assert check["kept"] == ("noncentered" if kept is nc else "auto")
    np.testing.assert_array_equal(checked.posterior["pop_cl"], kept.posterior["pop_cl"])
    assert checked.attrs["centered_subjects"] == kept.attrs["centered_subjects"]
    timing = json.loads(checked.attrs["timing_s"])
    assert "nuts_noncentered" in timing and "nuts" in timing
    from pkpd.inference.summary import parameterization_check_text

    text = parameterization_check_text(checked)
    assert f"{n_auto} transitions diverged" in text and f"{n_nc} divergences" in text
    assert parameterization_check_text(auto) is None


def test_the_rerun_is_due_only_when_divergences_sit_at_a_centred_omegas_small_end():
    """The funnel's signature: divergent draws at small ω of a centred parameter."""
    import types

    import pkpd.inference.fit as F

    rng = np.random.default_rng(0)
    n = 1000
    om_cl = np.exp(rng.normal(np.log(0.3), 0.2, n))
    om_v = np.exp(rng.normal(np.log(0.2), 0.2, n))
    samples = {"omega_cl": om_cl, "omega_v": om_v}
    spec = types.SimpleNamespace(parameterization="auto", centered=("cl", "v"))
    small_cl = np.argsort(om_cl)[:30]  # 3 % of the draws, all at the smallest omega_cl
    div = np.zeros(n, bool)
    div[small_cl] = True
    assert F._fallback_centered(spec, samples, {"diverging": div}, 500) == ["cl"]
    # the same divergences but fewer warmup iterations than the check needs: no rerun
    assert F._fallback_centered(spec, samples, {"diverging": div}, 50) is None
    # nothing centred, or not auto: no rerun
    for other in (dict(centered=()), dict(parameterization="noncentered")):
        s2 = types.SimpleNamespace(**{**vars(spec), **other})
        assert F._fallback_centered(s2, samples, {"diverging": div}, 500) is None
    # as many divergences spread over the draws: not the centring's doing
    spread = np.zeros(n, bool)
    spread[rng.choice(n, 30, replace=False)] = True
    assert F._fallback_centered(spec, samples, {"diverging": spread}, 500) is None
    # at the small end but fewer than 1 % of the draws: no rerun
    few = np.zeros(n, bool)
    few[small_cl[:5]] = True
    assert F._fallback_centered(spec, samples, {"diverging": few}, 500) is None


def test_auto_parameterization_decides_subject_by_subject(study):
    """Half the subjects keep all seven samples, the others one late sample: V is centred for
    the rich half only (a single mixed site), and the start and sampling run with it."""
    rich_ids = set(range(1, 11))
    df = study[(study.EVID == 1) | study.ID.isin(rich_ids) | (study.TIME == 24)]
    idata = fit("one_cmt_iv", df, chains=1, warmup=20, draws=10, seed=1, progress_bar=False)
    counts = json.loads(idata.attrs["centered_subjects"])
    assert counts["v"] == len(rich_ids), counts
    assert "v" in json.loads(idata.attrs["centered_parameters"])
    assert np.all(np.isfinite(idata.posterior["eta_v"].values))


def test_mixed_centred_start_is_the_same_point(study):
    """The non-centred MAP point, converted for a model centred for some subjects only, gives
    the same subject effects (the conversion is a change of variables, not a new draw)."""
    import dataclasses

    from numpyro.infer.util import constrain_fn

    from pkpd.inference.fit import _centered_start, _valid_start, build_model

    spec = prepare("one_cmt_iv", study)
    obs = jnp.asarray(spec.obs_y)
    nm0 = build_model(dataclasses.replace(spec, parameterization="noncentered"))
    x, objective = _valid_start(nm0, obs, jax.random.PRNGKey(0))
    u = objective.unravel(jnp.asarray(x))
    u["z_v"] = jnp.linspace(-1.5, 1.5, spec.n_subjects)  # effects away from zero
    mask = np.arange(spec.n_subjects) % 3 == 0
    spec.centered, spec.centered_subjects = ("v",), {"v": mask}
    nm = build_model(spec)
    uc = _centered_start(spec, nm, nm0, obs, u)
    assert set(uc) == set(u) - {"z_v"} | {"zc_v"}
    a = constrain_fn(nm0, (), {"obs": obs}, u, return_deterministic=True)
    b = constrain_fn(nm, (), {"obs": obs}, uc, return_deterministic=True)
    np.testing.assert_allclose(b["eta_v"], a["eta_v"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b["theta_v"], a["theta_v"], rtol=1e-12)
    # the centred subjects carry log V itself, the others the standardised effect
    np.testing.assert_allclose(uc["zc_v"][mask], np.log(a["theta_v"][mask]), rtol=1e-12)
    np.testing.assert_allclose(uc["zc_v"][~mask], u["z_v"][~mask])


def test_laplace_covariance_matches_the_dense_hessian(study):
    """The arrow-structured Laplace covariance (about 10 gradient differences) equals the
    inverse of the full Hessian (jax.hessian, every coordinate) of a partly centred model, at
    the MAP: every marginal variance and the population block."""
    import dataclasses

    from pkpd.inference.fit import (
        _centered_start,
        _laplace_covariance,
        _map_estimate,
        _Objective,
        _population_sites,
        _valid_start,
        build_model,
    )

    spec = prepare("one_cmt_iv", study)
    obs = jnp.asarray(spec.obs_y)
    nm0 = build_model(dataclasses.replace(spec, parameterization="noncentered"))
    x, objective = _valid_start(nm0, obs, jax.random.PRNGKey(0))
    x, _ = _map_estimate(objective, x)
    spec.centered, spec.centered_subjects = ("cl", "v"), {"v": np.arange(spec.n_subjects) < 12}
    nm = build_model(spec)
    uc = _centered_start(spec, nm, nm0, obs, objective.unravel(jnp.asarray(x)))
    obj = _Objective(nm, obs, uc)
    flat = jax.flatten_util.ravel_pytree(uc)[0]
    population = tuple(sorted(_population_sites(nm, obs)))
    var, pop_idx, sigma_pp = _laplace_covariance(obj, flat, population, spec.n_subjects)
    H = np.asarray(jax.hessian(obj.pe)(flat))
    assert np.linalg.eigvalsh(H).min() > 1e-2  # positive definite here: no flooring
    cov = np.linalg.inv(H)
    assert pop_idx.size == 6 and var.size == 6 + 2 * spec.n_subjects
    np.testing.assert_allclose(var, np.diag(cov), rtol=1e-5)
    np.testing.assert_allclose(sigma_pp, cov[np.ix_(pop_idx, pop_idx)], rtol=1e-5, atol=1e-9)


def test_dense_population_mass_matrix_block(study):
    """The dense block holds the population-level sites only, and sampling runs with it."""
    from pkpd.inference.fit import _population_sites, build_model

    spec = prepare("one_cmt_iv", study)
    sites = _population_sites(build_model(spec), jnp.asarray(spec.obs_y))
    assert sorted(sites) == [
        "omega_cl",
        "omega_v",
        "pop_cl",
        "pop_v",
        "sigma_add_conc",
        "sigma_prop_conc",
    ]
    idata = fit(
        "one_cmt_iv",
        study,
        chains=1,
        warmup=30,
        draws=20,
        seed=2,
        progress_bar=False,
        mass_matrix="dense-population",
    )
    assert idata.attrs["mass_matrix"] == "dense-population"
    assert np.all(np.isfinite(idata.posterior["pop_cl"].values))


@pytest.mark.parametrize("centred", ["half", "none"])
def test_levelled_parameter_is_an_exact_change_of_variables(study, centred):
    """Sampling log CL through its level ℓ = V·(k − log CL) (V standing in for a Hill exponent)
    changes the coordinates, not the model: at any point the chain model's potential differs
    from the plain one by the log-Jacobian, (1 + centred subjects)·log V, the individual
    parameters agree, and the level coordinates are the hand-computed ones. With no subject
    centred (what ``auto`` does for a levelled IC50) only the population value is levelled."""
    import dataclasses

    from numpyro.infer.util import constrain_fn, potential_energy

    from pkpd.inference.fit import _centered_start, _valid_start, build_model

    spec = prepare("one_cmt_iv", study)
    obs = jnp.asarray(spec.obs_y)
    nm0 = build_model(dataclasses.replace(spec, parameterization="noncentered"))
    x, objective = _valid_start(nm0, obs, jax.random.PRNGKey(0))
    u = objective.unravel(jnp.asarray(x))
    u["z_cl"] = jnp.linspace(-1.2, 1.5, spec.n_subjects)
    u["pop_v"] = jnp.log(3.0)  # unconstrained: log V
    mask = (np.arange(spec.n_subjects) % 2 == 0) & (centred == "half")
    if mask.any():
        spec.centered, spec.centered_subjects = ("cl",), {"cl": mask}
    plain = build_model(spec)
    up = _centered_start(spec, plain, nm0, obs, u)
    spec_l = dataclasses.replace(spec, levels={"cl": ("v", None, 1.3)})
    lev = build_model(spec_l)
    ul = _centered_start(spec_l, lev, nm0, obs, u)
    assert set(ul) == set(up) - {"pop_cl"} | {"pop_cl_level"}
    np.testing.assert_allclose(ul["pop_cl_level"], 3.0 * (1.3 - up["pop_cl"]), rtol=1e-12)
    if mask.any():
        np.testing.assert_allclose(ul["zc_cl"][mask], 3.0 * (1.3 - up["zc_cl"][mask]), rtol=1e-12)
        np.testing.assert_allclose(ul["zc_cl"][~mask], up["zc_cl"][~mask], rtol=1e-12)
    else:
        np.testing.assert_allclose(ul["z_cl"], up["z_cl"], rtol=1e-12)
    d = potential_energy(lev, (), {"obs": obs}, ul) - potential_energy(plain, (), {"obs": obs}, up)
    # potentials of ~1e3: round-off ~1e-8; a Jacobian missing one subject would be 1.1 off
    np.testing.assert_allclose(float(d), (1 + mask.sum()) * np.log(3.0), rtol=0, atol=1e-6)
    a = constrain_fn(plain, (), {"obs": obs}, up, return_deterministic=True)
    b = constrain_fn(lev, (), {"obs": obs}, ul, return_deterministic=True)
    np.testing.assert_allclose(b["theta_cl"], a["theta_cl"], rtol=1e-12)
    np.testing.assert_allclose(b["pop_cl"], a["pop_cl"], rtol=1e-12)


def test_auto_parameterization_does_not_centre_a_levelled_parameter(study):
    """Rich data centre CL for every subject (test above); declared as a levelled IC50 (V its
    Hill exponent), CL is sampled through its level and its subject effects stay non-centred,
    while V's centring is unchanged."""
    import dataclasses

    from pkpd.models.library import LinearPKModel, one_cmt_iv

    @dataclasses.dataclass(frozen=True)
    class Levelled(LinearPKModel):
        hill_levels = {"cl": ("v", None)}

    model = Levelled(
        **{f.name: getattr(one_cmt_iv, f.name) for f in dataclasses.fields(one_cmt_iv)}
    )
    idata = fit(model, study, chains=1, warmup=20, draws=10, seed=1, progress_bar=False)
    assert list(json.loads(idata.attrs["sampled_levels"])) == ["cl"]
    assert json.loads(idata.attrs["centered_parameters"]) == ["v"]
    assert json.loads(idata.attrs["centered_subjects"]) == {"cl": 0, "v": 20}
    assert np.all(np.isfinite(idata.posterior["pop_cl"].values))


def test_level_reference_decorrelates_the_level_from_the_hill_exponent(study):
    """The reference of :func:`_choose_levels` makes the level uncorrelated with log h under
    the Laplace approximation at the MAP: checked on the inverse of the levelled model's full
    Hessian (jax.hessian), with V standing in for h and CL for the IC50; a reference one log
    unit off leaves them correlated."""
    import dataclasses

    from pkpd.inference.fit import (
        _centered_start,
        _choose_levels,
        _map_estimate,
        _Objective,
        _population_sites,
        _valid_start,
        build_model,
    )

    spec = prepare("one_cmt_iv", study)
    spec.parameterization = "noncentered"
    obs = jnp.asarray(spec.obs_y)
    nm0 = build_model(spec)
    x, objective = _valid_start(nm0, obs, jax.random.PRNGKey(0))
    x, _ = _map_estimate(objective, x)
    for _ in range(3):  # Newton polish: the identity below needs a zero gradient
        g = jax.grad(objective.pe)(jnp.asarray(x))
        x = x - np.linalg.solve(np.asarray(jax.hessian(objective.pe)(jnp.asarray(x))), g)
    population = tuple(sorted(_population_sites(nm0, obs)))
    assert _choose_levels(spec, objective, x, population) == {}  # the model declares none
    levels = _choose_levels(spec, objective, x, population, pairs={"cl": ("v", None)})
    assert set(levels) == {"cl"} and levels["cl"][:2] == ("v", None)

    def corr(log_ref):
        s_l = dataclasses.replace(spec, levels={"cl": ("v", None, log_ref)})
        lev = build_model(s_l)
        ul = _centered_start(s_l, lev, nm0, obs, objective.unravel(jnp.asarray(x)))
        flat = jax.flatten_util.ravel_pytree(ul)[0]
        cov = np.linalg.inv(np.asarray(jax.hessian(_Objective(lev, obs, ul).pe)(flat)))
        names = sorted(ul)  # ravel order; the population sites are scalars and come first
        i, j = names.index("pop_cl_level"), names.index("pop_v")
        assert all(np.ndim(ul[n]) == 0 for n in names[: max(i, j) + 1])
        return cov[i, j] / np.sqrt(cov[i, i] * cov[j, j])

    assert abs(corr(levels["cl"][2])) < 1e-4  # the Laplace pieces are central differences
    assert abs(corr(levels["cl"][2] + 1.0)) > 0.1
