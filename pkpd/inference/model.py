"""The NumPyro model of a fit (:func:`build_model`): priors, the hierarchy
(:mod:`pkpd.inference.hierarchy`), the model's predictions and the residual likelihood."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd

from pkpd.inference.hierarchy import (
    from_unconstrained,
    individual_parameters,
    new_occasion_effects,
    sigma_site,
    subject_mean,
)
from pkpd.inference.layout import observation_predictor
from pkpd.inference.likelihood import KIND_OF_MODEL, ResidualLikelihood
from pkpd.inference.priors import Dist
from pkpd.inference.spec import FitSpec


def _sample(name, d: Dist):
    return numpyro.sample(name, d.numpyro())


#: Prior families that are a normal distribution on the scale of a parameter's transform.
_NORMAL_ON = {"log": ("lognormal", "sd_log"), "logit": ("logitnormal", "sd_logit")}


def _normal_on_transform(pp) -> tuple[float, float] | None:
    """``(mean, sd)`` of the parameter's population prior on its transformed scale
    (``T(θ / multiplier)``) where that prior is normal there, else ``None``."""
    fam, p = pp.prior.family, pp.prior.params
    if pp.transform == "identity" and fam == "normal":
        return p["mean"], p["sd"]
    if pp.transform in _NORMAL_ON and fam == _NORMAL_ON[pp.transform][0]:
        m = p["median"]
        # host floats, not _to_unconstrained (jnp): build_model calls this while jit traces
        centre = math.log(m) if pp.transform == "log" else math.log(m / (1.0 - m))
        return centre, p[_NORMAL_ON[pp.transform][1]]
    return None


def _level_frame(level, value):
    """``(h, k)`` of a levelled parameter (``ℓ = h·(k − log θ)``): its Hill exponent and
    log reference + log scale, from ``level = (hill, scale, log_ref)`` and ``value(name)``,
    a population value."""
    hill, scale, log_ref = level
    return value(hill), log_ref + (jnp.log(value(scale)) if scale else 0.0)


def _aggregate_likelihood(spec, pop, study_values, beta, omegas):
    """The published arm-level summaries' log density (:mod:`pkpd.inference.aggregate`) as
    a factor; each summary's prediction and sampling SE as deterministics."""
    from pkpd.inference.aggregate import summary_loglik, virtual_values

    v = virtual_values(spec.aggregate, spec, pop, study_values, beta, omegas)
    ll, mu, se = summary_loglik(spec.aggregate, v)
    numpyro.deterministic("aggregate_mu", mu)
    numpyro.deterministic("aggregate_se", se)
    numpyro.factor("aggregate", jnp.where(jnp.all(jnp.isfinite(ll)), jnp.sum(ll), -jnp.inf))


def build_model(spec: FitSpec):
    """The NumPyro model function ``model(obs=None)`` of a fit spec (see module docstring)."""
    pri = spec.priors
    S, n_study = spec.n_subjects, spec.n_studies
    study = jnp.asarray(spec.padded.data.study)
    eff_vals = {k: jnp.asarray(v) for k, v in spec.effect_values.items()}
    kinds = jnp.asarray(
        [KIND_OF_MODEL[pri.residuals[e].model] for e in spec.endpoints], dtype=jnp.int32
    )
    o_s = jnp.asarray(spec.obs_subject)
    o_p = jnp.asarray(spec.obs_point)
    o_e = jnp.asarray(spec.obs_endpoint)
    o_lloq = jnp.asarray(spec.obs_lloq)
    o_blq = jnp.asarray(spec.obs_blq)
    static_likelihood = (
        tuple(sorted({KIND_OF_MODEL[pri.residuals[e].model] for e in spec.endpoints})),
        bool(np.any(spec.obs_blq)),
    )
    predict = observation_predictor(spec)
    n_occ = spec.n_occasions
    if spec.iov:
        occ_valid = jnp.asarray(spec.padded.data.occ_valid)

    levels = spec.levels

    def level_frame(p, pop):
        return _level_frame(levels[p], pop.__getitem__)

    def numpyro_model(obs=None):
        pop, eta_study, beta, eta = {}, {}, {}, {}
        # per study (not per subject) effects and the subject-effect SDs, for the arms of
        # aggregate data (pkpd.inference.aggregate)
        study_values, omegas = {}, {}

        def study_effects(p):
            """Sample ``p``'s between-study SD and standardised effects; record η_study."""
            om = _sample(f"omega_study_{p}", pri.parameters[p].bsv_study)
            with numpyro.plate("study", n_study):
                zs = numpyro.sample(f"z_study_{p}", nd.Normal(0.0, 1.0))
            study_values[p] = numpyro.deterministic(f"eta_study_{p}", om * zs)
            eta_study[p] = study_values[p][study]
            return om, zs

        # levelled parameters last: their level is defined through the others' values
        for p in sorted(spec.estimated, key=lambda q: q in levels):
            pp = pri.parameters[p]
            if p in spec.anchors:
                # T(θ/mult) ~ N(μ, s) sampled through the informed studies' mean value
                # a = T + ω mean(z_s): a shift given ω and z (Jacobian 1), so the prior on T stays
                om, zs = study_effects(p)
                # the site's own distribution (the prior's, so that tracing and initial draws
                # work) is cancelled by the factor, which leaves the prior on T
                prior_t = nd.Normal(*_normal_on_transform(pp))
                anchor = numpyro.sample(f"pop_{p}_anchor", prior_t)
                t = anchor - om * jnp.mean(zs[jnp.asarray(spec.anchors[p])])
                numpyro.factor(f"pop_{p}_prior", prior_t.log_prob(t) - prior_t.log_prob(anchor))
                pop[p] = numpyro.deterministic(
                    f"pop_{p}", from_unconstrained(t, pp.transform) * pp.multiplier
                )
                continue
            if p in levels:
                # log θ ~ N(μ, s) sampled as ℓ = h (k − log θ) ~ N(h (k − μ), h s): the same
                # prior, by the change of variables (|dℓ/dlog θ| = h)
                h, k = level_frame(p, pop)
                mu, sd = _normal_on_transform(pp)  # levelled: lognormal on the log scale
                lvl = numpyro.sample(f"pop_{p}_level", nd.Normal(h * (k - mu), h * sd))
                pop[p] = numpyro.deterministic(f"pop_{p}", jnp.exp(k - lvl / h))
            else:
                site = f"pop_{p}" if pp.multiplier == 1.0 else f"pop_{p}_fraction"
                theta = _sample(site, pp.prior)
                pop[p] = theta * pp.multiplier
                if pp.multiplier != 1.0:
                    numpyro.deterministic(f"pop_{p}", pop[p])
            if pp.bsv_study is not None and n_study > 1:
                study_effects(p)
        for eff in spec.effects:
            if eff.prior.is_fixed:
                beta[eff.name] = eff.prior.params["value"]
            else:
                beta[eff.name] = _sample(f"beta_{eff.name}", eff.prior)
        corr = spec.correlated
        centered_set = set(spec.centered)
        if corr:
            oms = jnp.stack([_sample(f"omega_{p}", pri.parameters[p].bsv) for p in corr])
            omegas.update({f"omega_{p}": oms[k] for k, p in enumerate(corr)})
            L = numpyro.sample(
                "corr_cholesky",
                nd.LKJCholesky(len(corr), concentration=pri.correlation.get("lkj_eta", 2.0)),
            )
            if S == 0:  # no individual data: the SDs reach only the aggregate arms
                pass
            elif set(corr) <= centered_set:
                loc = jnp.stack(
                    [subject_mean(spec, p, pop, eta_study, beta, eff_vals, S) for p in corr], -1
                )
                with numpyro.plate("subject", S):
                    u = numpyro.sample(
                        "zc_corr", nd.MultivariateNormal(loc, scale_tril=oms[:, None] * L)
                    )
                eta_c = u - loc
            else:
                with numpyro.plate("subject", S):
                    zc = numpyro.sample(
                        "z_corr", nd.Normal(0.0, 1.0).expand([len(corr)]).to_event(1)
                    )
                eta_c = (zc @ L.T) * oms
            for k, p in enumerate(corr):
                if S:
                    eta[p] = numpyro.deterministic(f"eta_{p}", eta_c[:, k])
        for p in spec.estimated:
            pp = pri.parameters[p]
            if pp.bsv is not None and p not in corr:
                om = _sample(f"omega_{p}", pp.bsv)
                omegas[f"omega_{p}"] = om
                if S == 0:  # no individual data: the SD reaches only the aggregate arms
                    continue
                if p in centered_set:  # centred for the subjects whose data pin them
                    c = jnp.asarray(spec.centered_mask(p))
                    loc = subject_mean(spec, p, pop, eta_study, beta, eff_vals, S)
                    # a levelled parameter's centred subjects: ℓ_i = h (k − log θ_i), exactly
                    # N(h (k − loc_i), h ω) when log θ_i ~ N(loc_i, ω)
                    h, k = level_frame(p, pop) if p in levels else (1.0, None)
                    mean = h * (k - loc) if p in levels else loc
                    with numpyro.plate("subject", S):
                        u = numpyro.sample(
                            f"zc_{p}",
                            nd.Normal(jnp.where(c, mean, 0.0), jnp.where(c, h * om, 1.0)),
                        )
                    t = k - u / h if p in levels else u
                    eta[p] = numpyro.deterministic(f"eta_{p}", jnp.where(c, t - loc, om * u))
                else:
                    with numpyro.plate("subject", S):
                        zi = numpyro.sample(f"z_{p}", nd.Normal(0.0, 1.0))
                    eta[p] = numpyro.deterministic(f"eta_{p}", om * zi)
        kappa = {}
        if spec.iov:
            # one SD per parameter and standard normals z [S, O]; the [correlation_iov] block's
            # drawn together, [S, O, k], and mixed by its LKJ factor
            corr_iov = spec.iov_correlated
            draw, z = {}, {}
            if corr_iov:
                for p in corr_iov:
                    draw[f"omega_iov_{p}"] = _sample(f"omega_iov_{p}", pri.parameters[p].iov)
                draw["corr_iov_cholesky"] = numpyro.sample(
                    "corr_iov_cholesky",
                    nd.LKJCholesky(
                        len(corr_iov), concentration=pri.correlation_iov.get("lkj_eta", 2.0)
                    ),
                )
                with numpyro.plate("subject", S, dim=-2), numpyro.plate("occasion", n_occ, dim=-1):
                    zc = numpyro.sample(
                        "z_iov_corr", nd.Normal(0.0, 1.0).expand([len(corr_iov)]).to_event(1)
                    )
                z.update({p: zc[..., j] for j, p in enumerate(corr_iov)})
            for p in spec.iov:
                if p in corr_iov:
                    continue
                draw[f"omega_iov_{p}"] = _sample(f"omega_iov_{p}", pri.parameters[p].iov)
                with numpyro.plate("subject", S, dim=-2), numpyro.plate("occasion", n_occ, dim=-1):
                    z[p] = numpyro.sample(f"z_iov_{p}", nd.Normal(0.0, 1.0))
            # κ = diag(ω_iov) L z, as simulations and predictive checks draw new occasions
            # (hierarchy.new_occasion_effects); padded occasions (a subject with fewer than
            # the most) have no data: κ = 0 there
            new = new_occasion_effects(
                draw, spec.iov, jnp.stack([z[p] for p in spec.iov]), occ_valid, corr_iov
            )
            kappa = {p: numpyro.deterministic(f"kappa_{p}", new[p]) for p in spec.iov}
        params = individual_parameters(
            spec,
            pop,
            eta=eta,
            eta_study=eta_study,
            beta=beta,
            effect_values=eff_vals,
            n=S,
            kappa=kappa,
        )
        for p in spec.estimated:
            numpyro.deterministic(f"theta_{p}", params[p])
        if spec.aggregate is not None:
            if corr:
                omegas["corr_cholesky"] = L
            _aggregate_likelihood(spec, pop, study_values, beta, omegas)
        preds = predict(params)
        ok = preds.pop("ok", jnp.ones(S, dtype=bool))
        stacked = jnp.stack([preds[e] for e in spec.endpoints])  # [E, S, P]
        f = stacked[o_e, o_s, o_p]
        good = jnp.all(ok) & jnp.all(jnp.isfinite(f))
        numpyro.factor("solver_ok", jnp.where(good, 0.0, -jnp.inf))
        f = jnp.where(jnp.isfinite(f), f, 1.0)
        add = jnp.zeros(len(spec.endpoints))
        prop = jnp.zeros(len(spec.endpoints))
        sig = jnp.ones(len(spec.endpoints))
        for j, e in enumerate(spec.endpoints):
            r = pri.residuals[e]
            if "additive" in r.terms:
                add = add.at[j].set(_sample(sigma_site("additive", e), r.terms["additive"]))
            if "proportional" in r.terms:
                prop = prop.at[j].set(
                    _sample(sigma_site("proportional", e), r.terms["proportional"])
                )
            for term in ("sd_log", "sd_logit"):
                if term in r.terms:
                    sig = sig.at[j].set(_sample(sigma_site(term, e), r.terms[term]))
        if f.shape[0] == 0:  # no individual data (published summaries alone)
            return
        with numpyro.plate("obs", f.shape[0]):
            numpyro.sample(
                "y",
                ResidualLikelihood(
                    f,
                    kinds[o_e],
                    add[o_e],
                    prop[o_e],
                    sig[o_e],
                    o_lloq,
                    o_blq,
                    static=static_likelihood,
                ),
                obs=obs,
            )

    return numpyro_model
