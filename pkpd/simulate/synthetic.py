"""A fit-like posterior from given parameter values, to simulate without fitting.

Pre-trial simulations often start from literature values rather than a fit.
:func:`fit_from_values` turns population values, between-subject and between-study SDs and
covariate effects into an :class:`arviz.InferenceData` with the layout of :func:`pkpd.fit`'s
output (and its provenance attributes, ``method="values"``), which :func:`pkpd.simulate` and
:func:`pkpd.save_fit` take like any fit. With ``uncertainty=0`` every draw is the same point
(parameter uncertainty ignored); ``uncertainty > 0`` spreads the population values
log-normally (logit-normally for fractions) by that SD.
"""

from __future__ import annotations

import numpy as np

from pkpd.simulate.errors import SimulationError


def _center(d) -> float:
    p = d.params
    return float(
        {
            "normal": lambda: p["mean"],
            "lognormal": lambda: p["median"],
            "logitnormal": lambda: p["median"],
            "halfnormal": lambda: 0.674 * p["scale"],
            "halfcauchy": lambda: p["scale"],
            "exponential": lambda: np.log(2) / p["rate"],
            "beta": lambda: p["a"] / (p["a"] + p["b"]),
            "uniform": lambda: 0.5 * (p["low"] + p["high"]),
            "fixed": lambda: p["value"],
        }[d.family]()
    )


def fit_from_values(
    model,
    data,
    values,
    *,
    omega=None,
    omega_study=None,
    omega_iov=None,
    effects=None,
    n_draws: int = 100,
    uncertainty: float = 0.0,
    seed: int = 0,
    priors=None,
    covariates=None,
    endpoints=None,
):
    """An InferenceData shaped like a pkpd fit, from given values (module docstring).

    Parameters
    ----------
    model : str or model object
    data : Dataset, DataFrame or path
        Gives the studies, the covariates to resample and the provenance (as for a fit).
    values : mapping
        Population value of every estimated parameter (natural scale, canonical units, e.g.
        ``{"cl": 16.2, ...}``; percentages in %).
    omega, omega_study : mapping, optional
        SDs of subject and study effects on the transformed scale (log: ≈ CV) of the
        parameters whose priors have ``bsv``/``bsv_study``; missing ones are 0.
    omega_iov : mapping, optional
        SDs of the occasion effects of the parameters with inter-occasion variability (an
        ``iov`` prior, data with occasions); missing ones are 0. The occasion effects
        (``kappa_<p>``) of the data's subjects are 0, like their ``eta``.
    effects : mapping, optional
        Value of each estimated covariate effect by name; missing ones take the centre of
        their prior (normal mean, lognormal median).
    n_draws : int
        Number of draws (one chain).
    uncertainty : float
        SD of the population values' spread across draws (transformed scale); 0: one point.
    seed : int
    priors, covariates, endpoints
        As for :func:`pkpd.fit`.

    Returns
    -------
    arviz.InferenceData
    """
    import jax.numpy as jnp

    from pkpd.inference.fit import _to_inference_data, prepare
    from pkpd.inference.hierarchy import individual_parameters, sigma_site

    spec = prepare(model, data, priors, covariates=covariates, endpoints=endpoints)
    pri = spec.priors
    omega = dict(omega or {})
    omega_study = dict(omega_study or {})
    omega_iov = dict(omega_iov or {})
    effects = dict(effects or {})
    missing = [p for p in spec.estimated if p not in values]
    unknown = sorted(
        set(omega) - {p for p in spec.estimated if pri.parameters[p].bsv is not None}
    ) + sorted(set(omega_study) - {p for p in spec.estimated if pri.parameters[p].bsv_study})
    unknown += sorted(set(omega_iov) - set(spec.iov))
    if missing or unknown:
        raise SimulationError(
            "fit_from_values: "
            + "; ".join(
                x
                for x in (
                    f"no value for estimated parameter(s) {', '.join(missing)}" if missing else "",
                    f"no subject/study/occasion variability in the priors (or no occasions in "
                    f"the data) for {', '.join(unknown)}"
                    if unknown
                    else "",
                )
                if x
            )
        )
    rng = np.random.default_rng(seed)
    n, S = int(n_draws), spec.n_subjects
    flat = {}
    for p in spec.estimated:
        pp = pri.parameters[p]
        v = float(values[p])
        z = rng.normal(0.0, 1.0, n) * uncertainty
        if pp.transform == "log":
            flat[f"pop_{p}"] = v * np.exp(z)
        elif pp.transform == "logit":
            f = v / pp.multiplier
            flat[f"pop_{p}"] = pp.multiplier / (1.0 + np.exp(-(np.log(f / (1 - f)) + z)))
        else:
            flat[f"pop_{p}"] = v + z
        if pp.bsv is not None:
            flat[f"omega_{p}"] = np.full(n, float(omega.get(p, 0.0)))
            flat[f"eta_{p}"] = np.zeros((n, S))
        if pp.bsv_study is not None and spec.n_studies > 1:
            flat[f"omega_study_{p}"] = np.full(n, float(omega_study.get(p, 0.0)))
            flat[f"eta_study_{p}"] = np.zeros((n, spec.n_studies))
        if p in spec.iov:
            flat[f"omega_iov_{p}"] = np.full(n, float(omega_iov.get(p, 0.0)))
            flat[f"kappa_{p}"] = np.zeros((n, S, spec.n_occasions))
    beta = {}
    for eff in spec.effects:
        if eff.prior.is_fixed:
            beta[eff.name] = eff.prior.params["value"]
        else:
            beta[eff.name] = float(effects.get(eff.name, _center(eff.prior)))
            flat[f"beta_{eff.name}"] = np.full(n, beta[eff.name])
    if spec.correlated:
        flat["corr_cholesky"] = np.broadcast_to(
            np.eye(len(spec.correlated)), (n,) + (len(spec.correlated), len(spec.correlated))
        ).copy()
    if spec.iov_correlated:
        k = len(spec.iov_correlated)
        flat["corr_iov_cholesky"] = np.broadcast_to(np.eye(k), (n, k, k)).copy()
    for e in spec.endpoints:
        for term, d in pri.residuals[e].terms.items():
            flat[sigma_site(term, e)] = np.full(n, _center(d))
    ev = {k: jnp.asarray(v) for k, v in spec.effect_values.items()}
    for i in range(n):
        pop = {p: flat[f"pop_{p}"][i] for p in spec.estimated}
        kappa = {p: jnp.zeros((S, spec.n_occasions)) for p in spec.iov}
        theta = individual_parameters(
            spec, pop, eta={}, eta_study={}, beta=beta, effect_values=ev, n=S, kappa=kappa
        )
        for p in spec.estimated:
            shape = (n, S, spec.n_occasions) if p in spec.iov else (n, S)
            flat.setdefault(f"theta_{p}", np.zeros(shape))[i] = np.asarray(theta[p])
    ll = np.zeros((n, len(spec.obs_y)))
    return _to_inference_data(
        spec,
        flat,
        ll,
        1,
        {},
        attrs=dict(
            seed=seed, method="values", chains=1, warmup=0, draws=n, uncertainty=float(uncertainty)
        ),
    )
