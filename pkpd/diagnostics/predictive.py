r"""Predictions and simulated replicates of a fit: PRED, IPRED, VPC replicates and NPDE.

Everything is computed from the fit file alone (:func:`pkpd.inference.posterior.restore_spec`),
with the fit's own hierarchy (:mod:`pkpd.inference.hierarchy`) and
residual error model (:class:`pkpd.inference.likelihood.ResidualLikelihood`):

* **PRED** (population prediction): subject and study effects set to 0, covariates as in the
  data; the median over posterior draws of the prediction.
* **IPRED** (individual prediction): the individual parameters ``theta_<p>`` of each draw; the
  median over posterior draws of the prediction.
* **Replicates** (for VPCs and NPDE): the trial simulated again with *new* subjects. Each
  replicate takes one posterior draw of the population parameters, between-subject SDs,
  covariate effects, study effects (the fitted studies keep their posterior effects) and
  residual error parameters, draws new subject effects :math:`\eta_i \sim N(0, \omega)` (with
  the fitted correlation where there is one), and adds residual error. Doses, sampling times
  and covariates are those of the data. Simulated values are not censored; an observation is
  simulated below the LLOQ when its value is below the record's LLOQ.
* **NPDE** (normalised prediction distribution errors, Brendel et al. 2006, Pharm Res
  23:2036; Comets et al. 2008, Comput Methods Programs Biomed 90:154): per subject and
  endpoint, observations and replicates are decorrelated with the Cholesky factor of the
  replicates' covariance (on the error model's scale: log for log-normal, logit for
  percentages), ``pde`` is the fraction of decorrelated replicates below the decorrelated
  observation and ``npde = Φ⁻¹(pde)``. Observations below the LLOQ get an imputed value drawn
  from the replicates' distribution below the LLOQ before decorrelation (Nguyen et al. 2012,
  AAPS J 14:871). Under the model, NPDE are independent N(0, 1).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from scipy import linalg, stats

from pkpd.diagnostics._common import as_fit


def _grouped_predictor(spec):
    """``predict(params) -> [N]`` predictions at the fit's observations.

    The fit's own predictor (:func:`pkpd.inference.fit.observation_predictor`: subjects grouped
    and trimmed as in the fit). Failed solves and non-finite values give NaN.
    """
    from pkpd.inference.fit import observation_predictor

    predict_all = observation_predictor(spec)
    o_s = jnp.asarray(spec.obs_subject)
    o_p = jnp.asarray(spec.obs_point)
    o_e = jnp.asarray(spec.obs_endpoint)

    def predict(params):
        res = predict_all(params)
        out = jnp.stack([res[e] for e in spec.endpoints])
        f = out[o_e, o_s, o_p]
        return jnp.where(res["ok"][o_s] & jnp.isfinite(f), f, jnp.nan)

    return predict


def _kinds(spec):
    from pkpd.inference.likelihood import KIND_OF_MODEL

    return np.asarray(
        [KIND_OF_MODEL[spec.priors.residuals[e].model] for e in spec.endpoints], dtype=np.int32
    )


def _batched(fn, inputs: dict, n: int, chunk: int, *extra):
    """``jax.vmap(fn)`` over the leading axis of ``inputs`` (and ``extra``), ``chunk`` at a time."""
    jfn = jax.jit(jax.vmap(fn))
    outs = []
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        sl = {k: jnp.asarray(v[a:b]) for k, v in inputs.items()}
        outs.append(np.asarray(jfn(sl, *(x[a:b] for x in extra))))
    return np.concatenate(outs, axis=0)


def _time_after_dose(spec) -> np.ndarray:
    """Time since the latest dose (with a positive amount) at or before each observation, h.

    A dose at the same time as an observation counts only when it comes first in the record
    order (a trough sampled at the time of the next dose is pre-dose). Before any dose: the
    time itself.
    """
    d = spec.padded.data
    s, p = spec.obs_subject, spec.obs_point
    t = np.asarray(d.point_time)[s, p][:, None]
    seq = np.asarray(d.point_seq)[s, p][:, None]
    dt = np.asarray(d.dose_time)[s]
    given = (
        np.asarray(d.dose_mask)[s]
        & (np.asarray(d.dose_amt)[s] > 0)
        & np.isin(np.asarray(d.dose_evid)[s], (1, 4))
    )
    before = given & ((dt < t) | ((dt == t) & (np.asarray(d.dose_seq)[s] <= seq)))
    last = np.where(before, dt, -np.inf).max(axis=1)
    return np.where(np.isfinite(last), t[:, 0] - last, t[:, 0])


def _transform(x, kind):
    """The error model's scale: identity, log (log-normal) or logit of a percentage."""
    from pkpd.inference.likelihood import LOGIT, LOGNORMAL

    x = np.asarray(x, dtype=float)
    if kind == LOGNORMAL:
        return np.log(np.maximum(x, 1e-300))
    if kind == LOGIT:
        p = np.clip(x / 100.0, 1e-12, 1 - 1e-12)
        return np.log(p) - np.log1p(-p)
    return x


def npde(
    dv, blq, lloq, sims, groups, kinds, *, seed: int = 0, decorrelate: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """NPDE and PDE of observations given replicates (method: module docstring).

    Parameters
    ----------
    dv : array [N]
        Observations (any value where ``blq``).
    blq : bool array [N]
        Observations below the LLOQ (censored).
    lloq : array [N]
        Quantification limits.
    sims : array [K, N]
        Replicates of every observation (``K`` replicates).
    groups : array [N]
        Group label of each observation; observations are decorrelated within a group (one
        subject's observations of one endpoint).
    kinds : int array [N]
        Error-model family of each observation (the scale decorrelation works on).
    seed : int
        Seed of the imputation of BLQ observations.
    decorrelate : bool
        ``False`` gives NPD (no decorrelation).

    Returns
    -------
    npde, pde : arrays [N]
        NaN where the replicates do not vary (e.g. a prediction of exactly 0 before a dose).
    """
    rng = np.random.default_rng(seed)
    dv = np.asarray(dv, dtype=float).copy()
    sims = np.asarray(sims, dtype=float)
    K, N = sims.shape
    blq = np.asarray(blq, dtype=bool)
    # BLQ: impute from the predictive distribution below the LLOQ
    for j in np.nonzero(blq)[0]:
        col = np.sort(sims[:, j][np.isfinite(sims[:, j])])
        if col.size == 0:
            continue
        p_lloq = float(np.mean(col < lloq[j])) if np.isfinite(lloq[j]) else 0.0
        u = rng.uniform(0.0, max(p_lloq, 1.0 / (2 * K)))
        dv[j] = np.quantile(col, u)
    pde = np.full(N, np.nan)
    for g in np.unique(groups):
        idx = np.nonzero(groups == g)[0]
        kind = int(kinds[idx[0]])
        S_ = _transform(sims[:, idx], kind)
        y = _transform(dv[idx], kind)
        ok = np.all(np.isfinite(S_), axis=0) & np.isfinite(y)
        sd = np.where(ok, np.nanstd(np.where(np.isfinite(S_), S_, np.nan), axis=0), 0.0)
        ok &= sd > 1e-9 * (1.0 + np.abs(np.nanmean(np.where(ok, S_, 0.0), axis=0)))
        idx, S_, y = idx[ok], S_[:, ok], y[ok]
        if idx.size == 0:
            continue
        if decorrelate and idx.size > 1 and K > idx.size + 1:
            mu = S_.mean(axis=0)
            C = np.cov(S_, rowvar=False)
            try:
                L = linalg.cholesky(C, lower=True)
                y = linalg.solve_triangular(L, y - mu, lower=True)
                S_ = linalg.solve_triangular(L, (S_ - mu).T, lower=True).T
            except linalg.LinAlgError:
                pass  # singular covariance: NPD for this group
        below = np.mean(S_ < y, axis=0) + 0.5 * np.mean(S_ == y, axis=0)
        pde[idx] = below
    pde_c = np.clip(pde, 1.0 / (2 * K), 1.0 - 1.0 / (2 * K))
    return stats.norm.ppf(pde_c), pde


def posterior_predictive(
    fit,
    *,
    n_replicates: int = 200,
    n_draws: int = 100,
    seed: int = 0,
    chunk: int = 25,
    decorrelate: bool = True,
) -> xr.Dataset:
    """PRED, IPRED, replicates of the trial with new subjects, and NPDE of every observation.

    Parameters
    ----------
    fit : arviz.InferenceData or path
        A pkpd fit.
    n_replicates : int
        Replicates of the trial (new subjects) for VPCs and NPDE.
    n_draws : int
        Posterior draws (evenly thinned) over which PRED and IPRED are taken as medians.
    seed : int
        Seed of the draws chosen, the new subject effects and the residual errors.
    chunk : int
        Draws or replicates computed at once (memory is about ``chunk`` x subjects x points per
        endpoint; lower it for ODE models on large data).
    decorrelate : bool
        NPDE (``True``) or NPD (``False``).

    Returns
    -------
    xarray.Dataset
        Dimension ``obs`` (the fit's observations) and ``replicate``. Variables ``time`` and
        ``tad`` (time after dose, h), ``subject``, ``study``, ``endpoint``, ``dv`` (NaN when
        BLQ), ``blq``, ``lloq``, ``line`` (data file line), ``pred``, ``ipred``, ``npde``,
        ``pde`` and ``y_sim`` ``[replicate, obs]`` (uncensored simulated observations).

    Examples
    --------
    >>> ppc = posterior_predictive(idata, n_replicates=100)   # doctest: +SKIP
    >>> float(ppc.npde.std())                                  # doctest: +SKIP
    """
    from pkpd.inference import hierarchy as H
    from pkpd.inference.likelihood import ResidualLikelihood
    from pkpd.inference.posterior import draws, restore_spec, thin_indices

    idata = as_fit(fit)
    if n_replicates < 1 or n_draws < 1:
        raise ValueError("n_replicates and n_draws must be at least 1")
    spec = restore_spec(idata)
    post = draws(idata)
    n_total = len(next(iter(post.values())))
    S = spec.n_subjects
    study = jnp.asarray(spec.padded.data.study)
    eff_vals = {k: jnp.asarray(v) for k, v in spec.effect_values.items()}
    predict = _grouped_predictor(spec)
    o_e = jnp.asarray(spec.obs_endpoint)
    kinds = jnp.asarray(_kinds(spec))
    lloq = jnp.asarray(spec.obs_lloq)
    blq = jnp.asarray(spec.obs_blq)
    fixed = {p: jnp.full(S, v) for p, v in spec.fixed.items()}
    pops = [f"pop_{p}" for p in spec.estimated]
    needed = set(pops) | {f"beta_{e.name}" for e in spec.effects if not e.prior.is_fixed}

    def pred_fn(d):
        params = H.individual_parameters(
            spec,
            H.population(spec, d),
            eta={},
            eta_study={},
            beta=H.covariate_effects(spec, d),
            effect_values=eff_vals,
            n=S,
        )
        return predict(params)

    def ipred_fn(d):
        return predict({**{p: d[f"theta_{p}"] for p in spec.estimated}, **fixed})

    with_bsv, corr = H.subject_effect_parameters(spec, post)
    with_study = [p for p in spec.estimated if f"eta_study_{p}" in post]

    occ_valid = None if not spec.iov else jnp.asarray(spec.padded.data.occ_valid)

    def replicate_fn(d, key):
        k_eta, k_corr, k_eps, k_occ = jax.random.split(key, 4)
        z = jax.random.normal(k_eta, (len(with_bsv), S))
        zc = jax.random.normal(k_corr, (S, len(corr))) if corr else None
        eta = H.new_subject_effects(d, with_bsv, corr, z, zc)
        eta_study = {p: d[f"eta_study_{p}"][study] for p in with_study}
        # new occasions too: κ ~ N(0, ω_iov²) per subject and occasion of the design
        zk = jax.random.normal(k_occ, (len(spec.iov),) + (occ_valid.shape if spec.iov else ()))
        kappa = H.new_occasion_effects(d, spec.iov, zk, occ_valid, spec.iov_correlated)
        params = H.individual_parameters(
            spec,
            H.population(spec, d),
            eta=eta,
            eta_study=eta_study,
            beta=H.covariate_effects(spec, d),
            effect_values=eff_vals,
            n=S,
            kappa=kappa,
        )
        f = predict(params)
        add, prop, sig = H.residual_sds(spec, d)
        like = ResidualLikelihood(
            jnp.where(jnp.isfinite(f), f, 1.0), kinds[o_e], add[o_e], prop[o_e], sig[o_e], lloq,
            blq,
        )  # fmt: skip
        return jnp.where(jnp.isfinite(f), like.sample(k_eps), jnp.nan)

    thin = thin_indices(n_total, min(n_draws, n_total))
    sub = {k: post[k][thin] for k in needed}
    pred = np.nanmedian(_batched(pred_fn, sub, len(thin), chunk), axis=0)
    theta = {f"theta_{p}": post[f"theta_{p}"][thin] for p in spec.estimated}
    ipred = np.nanmedian(_batched(ipred_fn, theta, len(thin), chunk), axis=0)

    rng = np.random.default_rng(seed)
    pick = rng.choice(n_total, n_replicates, replace=n_replicates > n_total)
    sigma_names = [k for k in post if k.startswith("sigma_")]
    rep_names = (
        needed
        | {f"omega_{p}" for p in with_bsv + corr}
        | {f"eta_study_{p}" for p in with_study}
        | {f"omega_iov_{p}" for p in spec.iov}
        | set(sigma_names)
        | ({"corr_cholesky"} if corr else set())
        | ({"corr_iov_cholesky"} if spec.iov_correlated else set())
    )
    rep_in = {k: post[k][pick] for k in rep_names}
    keys = jax.random.split(jax.random.PRNGKey(seed), n_replicates)
    y_sim = _batched(replicate_fn, rep_in, n_replicates, chunk, keys)

    d = spec.padded
    subj = np.asarray(d.subject_ids, dtype=object)[spec.obs_subject].astype(str)
    studies = np.asarray(d.studies, dtype=object)[np.asarray(d.data.study)[spec.obs_subject]]
    ep = np.asarray(spec.endpoints, dtype=object)[spec.obs_endpoint].astype(str)
    dv = np.where(spec.obs_blq, np.nan, spec.obs_y)
    groups = spec.obs_subject.astype(np.int64) * len(spec.endpoints) + spec.obs_endpoint
    nd, pde = npde(
        dv,
        spec.obs_blq,
        spec.obs_lloq,
        y_sim,
        groups,
        _kinds(spec)[spec.obs_endpoint],
        seed=seed,
        decorrelate=decorrelate,
    )
    obs = np.arange(len(dv))
    ds = xr.Dataset(
        {
            "time": ("obs", spec.obs_time, {"units": "h"}),
            "tad": ("obs", _time_after_dose(spec), {"units": "h", "long_name": "time after dose"}),
            "subject": ("obs", subj),
            "study": ("obs", studies.astype(str)),
            "endpoint": ("obs", ep),
            "dv": ("obs", dv),
            "blq": ("obs", spec.obs_blq.astype(bool)),
            "lloq": ("obs", spec.obs_lloq),
            "line": ("obs", spec.obs_line),
            "pred": ("obs", pred),
            "ipred": ("obs", ipred),
            "npde": ("obs", nd),
            "pde": ("obs", pde),
            "y_sim": (("replicate", "obs"), y_sim),
        },
        coords={"obs": obs, "replicate": np.arange(n_replicates)},
        attrs={
            "n_replicates": n_replicates,
            "n_draws": len(thin),
            "seed": seed,
            "decorrelated": int(decorrelate),
            "endpoint_units": idata.observed_data["y"].attrs.get("units", "{}"),
            "error_models": json.dumps({e: spec.priors.residuals[e].model for e in spec.endpoints}),
            "replicates": "new subjects (eta ~ N(0, omega)); population parameters, study "
            "effects and residual errors from posterior draws; design and covariates of the data",
        },
    )
    return ds
