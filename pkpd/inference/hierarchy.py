r"""The population hierarchy, written once: site names, transforms, population → study →
subject → individual parameters, covariate multipliers and residual SDs.

The NumPyro model of a fit (:func:`pkpd.inference.fit.build_model`), simulation
(:func:`pkpd.simulate`), posterior predictive checks and VPCs
(:func:`pkpd.diagnostics.posterior_predictive`) and synthetic fits
(:func:`pkpd.simulate.synthetic.fit_from_values`) all compute individual parameters here, from
the same names, so none of them can drift from the model that was fitted.

For parameter :math:`p` with transform :math:`T` (log, logit or identity) and multiplier
:math:`m` (e.g. 100 for a percentage), subject :math:`i` of study :math:`s(i)`::

    T(θ_pi / m) = T(θ_p / m) + η_study,p,s(i) + Σ_effects log g(β, cov_i) + η_p,i

with :math:`η_{p,i} = ω_p z_{p,i}`, :math:`z \sim N(0, 1)` (correlated parameters:
:math:`η_i = \mathrm{diag}(ω) L z_i`, :math:`L` the Cholesky factor of their correlation)
and :math:`η_{study} = ω_{study} z_{study}`. A parameter with inter-occasion variability adds
:math:`κ_{p,i,k} = ω^{iov}_p z^{iov}_{p,i,k}` in occasion :math:`k` of subject :math:`i` (one SD
shared by every occasion), so its individual value is ``[subject, occasion]``; parameters
listed in the priors' ``[correlation_iov]`` have correlated occasion effects,
:math:`κ_{i,k} = \mathrm{diag}(ω^{iov}) L_{iov} z_{i,k}`.

Site names (the variables of a fit's posterior): ``pop_<p>``, ``omega_<p>``,
``omega_study_<p>``, ``omega_iov_<p>``, ``eta_<p>`` [subject], ``eta_study_<p>`` [study],
``kappa_<p>`` [subject, occasion], ``theta_<p>`` [subject] (or [subject, occasion] with
inter-occasion variability), ``beta_<effect>``, ``corr_cholesky``, ``corr_iov_cholesky``, and per endpoint ``sigma_add_<e>``,
``sigma_prop_<e>``, ``sigma_log_<e>``, ``sigma_logit_<e>`` (:data:`SIGMA_PREFIX`).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

#: Posterior variable prefix of each residual error term of a priors file (``sigma_<x>_<e>``).
SIGMA_PREFIX = {
    "additive": "sigma_add",
    "proportional": "sigma_prop",
    "sd_log": "sigma_log",
    "sd_logit": "sigma_logit",
}


def sigma_site(term: str, endpoint: str) -> str:
    """The posterior variable of a residual error term, e.g. ``sigma_prop_conc``."""
    return f"{SIGMA_PREFIX[term]}_{endpoint}"


# -- transforms -------------------------------------------------------------------------------------
def to_unconstrained(x, transform):
    """``T(x)``: log, logit or identity."""
    if transform == "log":
        return jnp.log(x)
    if transform == "logit":
        return jnp.log(x) - jnp.log1p(-x)
    return x


def from_unconstrained(z, transform):
    """``T⁻¹(z)``."""
    if transform == "log":
        return jnp.exp(z)
    if transform == "logit":
        return jax.nn.sigmoid(z)
    return z


def log_multiplier(eff, theta, cov):
    """Log of a covariate effect's multiplier for covariate values ``cov`` (``power``:
    ``(cov/ref)^θ``; ``linear``: ``1 + θ(cov − ref)``, floored at 1e-12; ``exponential``:
    ``exp(θ(cov − ref))``; ``categorical``: ``θ`` where the 0/1 flag is 1)."""
    if eff.form == "power":
        return theta * jnp.log(cov / eff.reference)
    if eff.form == "linear":
        return jnp.log(jnp.maximum(1.0 + theta * (cov - eff.reference), 1e-12))
    if eff.form == "exponential":
        return theta * (cov - eff.reference)
    return jnp.where(cov == 1, jnp.log(theta), 0.0)  # categorical


# -- individual parameters ----------------------------------------------------------------------------
def subject_mean(spec, p, pop, eta_study, beta, effect_values, n):
    """Transformed-scale mean of parameter ``p`` for each subject: population, study, covariates."""
    pp = spec.priors.parameters[p]
    z = to_unconstrained(pop[p] / pp.multiplier, pp.transform) * jnp.ones(n)
    if p in eta_study:
        z = z + eta_study[p]
    for eff in spec.effects:
        if eff.parameter == p:
            z = z + log_multiplier(eff, beta[eff.name], effect_values[eff.name])
    return z


def individual_parameters(spec, pop, *, eta, eta_study, beta, effect_values, n, kappa=None):
    r"""Individual parameter values of ``n`` subjects (the module docstring's equation).

    Parameters
    ----------
    spec : FitSpec
        Gives the priors (transforms, multipliers), estimated and fixed parameters and the
        covariate effects.
    pop : mapping
        Population value of each estimated parameter on the natural scale, canonical unit.
    eta, eta_study : mapping
        Subject and study random effects per parameter on the transformed scale, ``[n]`` (the
        study effect already indexed by each subject's study); missing entries are zero.
    beta : mapping
        Value of each covariate effect (by effect name).
    effect_values : mapping
        Covariate value of each subject for each effect (by effect name), ``[n]``.
    kappa : mapping, optional
        Occasion effects per parameter on the transformed scale, ``[n, O]``: that
        parameter's values are then ``[n, O]``.
    """
    pri = spec.priors
    kappa = kappa or {}
    params = {}
    for p in spec.estimated:
        pp = pri.parameters[p]
        z = subject_mean(spec, p, pop, eta_study, beta, effect_values, n)
        if p in eta:
            z = z + eta[p]
        if p in kappa:
            z = z[..., None] + kappa[p]
        params[p] = from_unconstrained(z, pp.transform) * pp.multiplier
    for p, v in spec.fixed.items():
        params[p] = jnp.full(n, v)
    return params


# -- reading one posterior draw -----------------------------------------------------------------------
def population(spec, draw: Mapping) -> dict:
    """Population value of every estimated parameter in a draw (``pop_<p>``)."""
    return {p: draw[f"pop_{p}"] for p in spec.estimated}


def covariate_effects(spec, draw: Mapping) -> dict:
    """Value of every covariate effect: its posterior variable ``beta_<name>``, or the fixed
    value of its prior."""
    return {
        e.name: (e.prior.params["value"] if e.prior.is_fixed else draw[f"beta_{e.name}"])
        for e in spec.effects
    }


def subject_effect_parameters(spec, names=None) -> tuple[list[str], list[str]]:
    """``(independent, correlated)``: the estimated parameters with between-subject
    variability, those outside and inside the correlation block (the order of the standard
    normals :func:`new_subject_effects` uses). ``names``: the posterior variables available
    (a parameter counts only if its ``omega_<p>`` is among them)."""
    pri = spec.priors
    corr = list(spec.correlated)
    has = (lambda p: True) if names is None else (lambda p: f"omega_{p}" in names)
    independent = [
        p for p in spec.estimated if pri.parameters[p].bsv is not None and p not in corr and has(p)
    ]
    return independent, [p for p in corr if has(p)]


def new_subject_effects(draw: Mapping, independent, correlated, z, zc=None) -> dict:
    r"""Subject effects of new subjects from standard normals: ``η_p = ω_p z_p`` for the
    independent parameters (``z`` ``[len(independent), ...]``: ``z[i]`` is parameter ``i``'s) and
    ``η = diag(ω) L z_c`` for the correlated block (``zc`` ``[..., k]``, ``L =
    draw["corr_cholesky"]``); ``...`` is nothing for one subject or ``[n]`` for ``n``."""
    eta = {p: draw[f"omega_{p}"] * z[i] for i, p in enumerate(independent)}
    if correlated:
        oms = jnp.stack([draw[f"omega_{p}"] for p in correlated])
        ec = (zc @ draw["corr_cholesky"].T) * oms
        eta.update({p: ec[..., i] for i, p in enumerate(correlated)})
    return eta


def new_occasion_effects(draw: Mapping, parameters, z, valid=None, correlated=()) -> dict:
    r"""Occasion effects of new subjects or occasions from standard normals:
    :math:`κ_p = ω^{iov}_p z_p` (``z`` ``[len(parameters), ...]``, ``z[i]`` parameter ``i``'s,
    ``...`` e.g. ``[subjects, occasions]``; ``draw["omega_iov_<p>"]`` scalar or broadcastable
    to ``...``), 0 where ``valid`` is False (occasions a subject does not have).

    The ``correlated`` parameters (a subset of ``parameters``, in the order of the fit's
    ``corr_iov_cholesky``) are correlated within an occasion: their normals, stacked in that
    order, are multiplied by :math:`L` = ``draw["corr_iov_cholesky"]`` (``[..., k, k]``, its
    leading dimensions broadcastable to ``...``) before scaling, as in the fit.
    """
    out = {}
    z = {p: z[i] for i, p in enumerate(parameters)}
    if correlated:
        zc = jnp.stack([z[p] for p in correlated], -1)[..., None]  # [..., k, 1]
        mixed = (draw["corr_iov_cholesky"] @ zc)[..., 0]
        z.update({p: mixed[..., j] for j, p in enumerate(correlated)})
    for p in parameters:
        kappa = draw[f"omega_iov_{p}"] * z[p]
        out[p] = kappa if valid is None else jnp.where(valid, kappa, 0.0)
    return out


def residual_sds(spec, draw: Mapping):
    """``(additive, proportional, log/logit SD)`` arrays over the fit's endpoints for one draw
    (0, 0 and 1 where an endpoint's error model has no such term; a fixed term its value)."""
    E = len(spec.endpoints)
    add, prop, sig = jnp.zeros(E), jnp.zeros(E), jnp.ones(E)
    for j, e in enumerate(spec.endpoints):
        r = spec.priors.residuals[e]
        for term in SIGMA_PREFIX:
            if term not in r.terms:
                continue
            name = sigma_site(term, e)
            if name in draw:
                v = draw[name]
            elif r.terms[term].is_fixed:
                v = r.terms[term].params["value"]
            else:  # pragma: no cover - every estimated term is a posterior variable
                raise KeyError(f"the fit has no posterior variable {name}")
            if term == "additive":
                add = add.at[j].set(v)
            elif term == "proportional":
                prop = prop.at[j].set(v)
            else:
                sig = sig.at[j].set(v)
    return add, prop, sig


__all__ = [
    "SIGMA_PREFIX",
    "covariate_effects",
    "from_unconstrained",
    "individual_parameters",
    "log_multiplier",
    "new_occasion_effects",
    "new_subject_effects",
    "population",
    "residual_sds",
    "sigma_site",
    "subject_effect_parameters",
    "subject_mean",
    "to_unconstrained",
]
