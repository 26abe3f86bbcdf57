r"""Hierarchical Bayesian fits with NumPyro: population → study → subject.

For every estimated parameter :math:`\theta` with transform :math:`T` (log for positive
parameters, logit for fractions), subject :math:`i` in study :math:`s(i)`:

.. math::
    T(\theta_i) = T(\theta_{pop}) + \sum_k \log m_k(\mathrm{cov}_{ik})
                  + \eta^{study}_{s(i)} + \eta_i, \qquad
    \eta^{study}_s = \omega^{study} z^{study}_s,\quad \eta_i = \omega z_i,\quad z \sim N(0, 1)

(non-centred). With a ``[correlation]`` entry the subject effects of the listed parameters are
:math:`\eta_i = \mathrm{diag}(\omega) L z_i` with :math:`L` the Cholesky factor of an
LKJ-distributed correlation matrix. Covariate multipliers :math:`m_k` follow
:class:`pkpd.inference.priors.CovariateEffect`. Observations enter through
:class:`pkpd.inference.likelihood.ResidualLikelihood` (error model per endpoint, BLQ as M3).
Endpoints without data contribute nothing; a failed ODE solve gives a ``-inf`` log density.

Output: an :class:`arviz.InferenceData` following ArviZ's schema (see :func:`fit`), saved and
loaded losslessly as netCDF by :func:`save_fit` / :func:`load_fit`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd

from pkpd.data.arrays import PaddedData
from pkpd.data.dataset import Dataset
from pkpd.inference.covariates import describe as describe_effect
from pkpd.inference.hierarchy import (
    from_unconstrained,
    individual_parameters,
    sigma_site,
    subject_mean,
    to_unconstrained,
)
from pkpd.inference.likelihood import KIND_OF_MODEL, ResidualLikelihood
from pkpd.inference.names import ORIGINAL_NAME
from pkpd.inference.priors import CovariateEffect, Dist, Priors, load_priors

FIT_MARKER = "pkpd_fit"


class FitError(ValueError):
    """A fit that cannot be set up (data, model and priors disagree); the message says how."""


# ---------------------------------------------------------------------------------------------
# Set-up


def resolve_model(model):
    """A model object from a name or an object satisfying the model contract
    (:class:`pkpd.models.Model`; checked)."""
    if isinstance(model, str):
        from pkpd.models import load_model

        return load_model(model)
    from pkpd.models.base import check_model

    try:
        check_model(model)
    except TypeError as e:
        raise FitError(f"argument model: {e}") from None
    return model


def model_endpoints(model) -> dict[str, str]:
    """Endpoint → unit of the model (:attr:`pkpd.models.Model.endpoint_units`)."""
    return dict(model.endpoint_units)


@dataclass
class FitSpec:
    """Everything a fit needs, checked and laid out as static arrays."""

    model: Any
    priors: Priors
    dataset: Dataset
    padded: PaddedData
    estimated: list[str]
    fixed: dict[str, float]
    effects: list[CovariateEffect]
    effect_values: dict[str, np.ndarray]
    dropped_effects: list[str]
    endpoints: list[str]
    obs_subject: np.ndarray
    obs_point: np.ndarray
    obs_endpoint: np.ndarray
    obs_y: np.ndarray
    obs_lloq: np.ndarray
    obs_blq: np.ndarray
    obs_time: np.ndarray
    obs_line: np.ndarray
    correlated: list[str] = field(default_factory=list)
    requested_covariates: list[str] | None = None
    parameterization: str = "auto"
    #: Parameters whose subject effects are sampled centred for some or all subjects (the
    #: others non-centred); set by :func:`fit` from ``parameterization``.
    centered: tuple[str, ...] = ()
    #: For parameters centred for only some subjects: which (bool array [subjects]); a
    #: parameter in ``centered`` and not here is centred for every subject.
    centered_subjects: dict[str, np.ndarray] = field(default_factory=dict)
    #: Parameters NUTS samples through their Hill-scaled level (:func:`_choose_levels`):
    #: ``{ic50: (hill, scale or None, log_reference)}``; set by :func:`fit`.
    levels: dict[str, tuple[str, str | None, float]] = field(default_factory=dict)
    #: Parameters with between-study effects, and the studies whose data inform them: NUTS
    #: samples those studies' mean value, not the population's (:func:`_choose_anchors`);
    #: set by :func:`fit`.
    anchors: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def centered_mask(self, p: str) -> np.ndarray:
        """Which subjects' effects on ``p`` are sampled centred (bool array [subjects])."""
        if p in self.centered_subjects:
            return np.asarray(self.centered_subjects[p], dtype=bool)
        return np.full(self.n_subjects, p in self.centered)

    @property
    def n_subjects(self) -> int:
        return self.padded.n_subjects

    @property
    def n_studies(self) -> int:
        return len(self.padded.studies)


def prepare(
    model,
    data,
    priors=None,
    *,
    covariates: Sequence[str] | None = None,
    endpoints: Sequence[str] | None = None,
) -> FitSpec:
    """Check data, model and priors against each other and lay out the arrays of a fit.

    Parameters
    ----------
    model : str or model object
    data : Dataset, path or DataFrame
        A path or DataFrame is read with the model's DVID codes and endpoint units
        (``read_dataset(data, model=model)``); read it yourself for ``endpoints=``/``dv_units=``.
    priors : Priors, path, mapping or None
        ``None`` loads the model's bundled priors (``priors/<model>.toml``).
    covariates : sequence of str, optional
        Names of covariate effects in the priors to use (default: every effect whose data
        column exists; the others are dropped and listed in the fit's attributes).
    endpoints : sequence of str, optional
        Fit only these endpoints (e.g. the PK of a PK/PD dataset); observations of the others
        are left out of the likelihood (and counted in the fit's attributes).
    """
    from pkpd.data import read_dataset

    model = resolve_model(model)
    # a path or DataFrame is read with the model's DVID codes and endpoint units
    ds = data if isinstance(data, Dataset) else read_dataset(data, model=model)
    eps_model = model_endpoints(model)
    if endpoints is not None:
        bad = [e for e in endpoints if e not in ds.endpoints or e not in eps_model]
        if bad:
            raise FitError(
                f"endpoints {', '.join(bad)} cannot be fitted: the data have {', '.join(ds.endpoints)} "
                f"and model {model.name!r} predicts {', '.join(eps_model)}"
            )
    present = [e for e in ds.endpoints if e in eps_model and (endpoints is None or e in endpoints)]
    unknown = [e for e in ds.endpoints if e not in eps_model and endpoints is None]
    if unknown:
        hint = ""
        if ds.endpoint_mapping.startswith("pkpd's default"):
            hint = (
                "; the data were read with pkpd's default temsirolimus DVID codes: read them "
                f"with the model's codes, pkpd.read_dataset(path, model={model.name!r}), or map "
                "the codes with endpoints={code: name}"
            )
        raise FitError(
            f"the data have observations of endpoint(s) {', '.join(unknown)}, which model "
            f"{model.name!r} does not predict (it has {', '.join(eps_model)}); remove those records "
            f"or set MDV=1 on them{hint}"
        )
    if not present:
        raise FitError("the data have no observations (EVID 0, MDV 0) to fit")
    model = model.with_endpoints(present)
    if not isinstance(priors, Priors):
        priors = (
            load_priors(priors, model=model) if priors is not None else load_priors(model=model)
        )
    params = dict(model.parameters)
    required = list(model.structural_parameters)
    missing = [p for p in required if p not in priors.parameters]
    if missing:
        raise FitError(
            f"no prior for parameter(s) {', '.join(missing)} of model {model.name!r}; add them "
            "to the priors file (see priors/README.md)"
        )
    estimated = [
        p for p in params if p in priors.parameters and not priors.parameters[p].prior.is_fixed
    ]
    fixed = {
        p: priors.parameters[p].prior.params["value"] * priors.parameters[p].multiplier
        for p in params
        if p in priors.parameters and priors.parameters[p].prior.is_fixed
    }
    padded = ds.to_arrays()
    problems = list(model.check_subject(padded.data))
    from pkpd.models.predict import modelled_rate_problems

    problems += [
        f"{p} (add a prior for it to the priors file)"
        for p in modelled_rate_problems(model, padded.data, priors.parameters)
    ]
    if problems:
        raise FitError("; ".join(problems))

    # covariate effects: names of effects in the priors, or expressions ("cl,v~WT ...")
    from pkpd.inference.covariates import CovariateSpecError, is_expression, parse_expression

    effects, values, dropped = [], {}, []
    requested = list(covariates) if covariates is not None else None
    exprs = [c for c in requested or [] if is_expression(c)]
    chosen = {c for c in requested or [] if not is_expression(c)} if requested is not None else None
    if chosen:
        unknown_eff = chosen - set(priors.covariates)
        if unknown_eff:
            raise FitError(
                f"covariate effect(s) {', '.join(sorted(unknown_eff))} are not in the priors "
                f"(it has {', '.join(priors.covariates) or 'none'}); to add an effect, write an "
                "expression such as 'cl,v~WT power(ref=70)' (see pkpd.inference.covariates)"
            )
    candidates = dict(priors.covariates)
    columns = {c: padded.covariate(c) for c in padded.covariates}
    problems = []
    for ex in exprs:
        try:
            for eff in parse_expression(ex, parameters=estimated, columns=columns):
                if eff.name in candidates:
                    problems.append(f"covariate {ex!r}: effect {eff.name} is given twice")
                candidates[eff.name] = eff
        except CovariateSpecError as e:
            problems.append(str(e))
    if problems:
        raise FitError("; ".join(problems))
    expr_names = set(candidates) - set(priors.covariates)
    for name, eff in candidates.items():
        if chosen is not None and name not in chosen and name not in expr_names:
            dropped.append(f"{name} (not chosen)")
            continue
        if eff.parameter not in estimated:
            dropped.append(f"{name} (parameter {eff.parameter} not estimated)")
            continue
        if eff.covariate not in padded.covariates:
            if chosen is not None:
                raise FitError(
                    f"covariate effect {name} needs data column {eff.covariate}, which the data "
                    f"do not have (covariates: {', '.join(padded.covariates) or 'none'})"
                )
            dropped.append(f"{name} (no {eff.covariate} column in the data)")
            continue
        v = padded.covariate(eff.covariate)
        if eff.form == "power" and np.any(v <= 0):
            raise FitError(f"covariate {eff.covariate} has values <= 0; a power model needs > 0")
        effects.append(eff)
        values[name] = v

    # residual error entries for every fitted endpoint
    for e in present:
        if e not in priors.residuals:
            raise FitError(
                f"no residual error model for endpoint {e!r} in the priors; add [residual.{e}]"
            )

    # observations, flattened
    d = padded.data
    s_idx, p_idx = np.nonzero(np.asarray(d.point_mask))
    ep_names = [padded.endpoints[i] for i in np.asarray(d.point_endpoint)[s_idx, p_idx]]
    keep = np.array([e in present for e in ep_names], dtype=bool)
    s_idx, p_idx = s_idx[keep], p_idx[keep]
    obs_ep = np.array(
        [present.index(padded.endpoints[i]) for i in np.asarray(d.point_endpoint)[s_idx, p_idx]],
        dtype=np.int32,
    )
    y = np.asarray(d.point_dv)[s_idx, p_idx]
    lloq = np.asarray(d.point_lloq)[s_idx, p_idx]
    blq = np.asarray(d.point_blq)[s_idx, p_idx]
    for j, e in enumerate(present):
        kind = priors.residuals[e].model
        sel = (obs_ep == j) & ~blq
        if kind in ("lognormal", "logit") and np.any(y[sel] <= 0):
            bad = int(np.sum(y[sel] <= 0))
            raise FitError(
                f"endpoint {e}: {bad} observation(s) <= 0 cannot have a {kind} error model; "
                "flag them BLQ with an LLOQ or choose an additive/combined model"
            )
        if kind == "logit" and np.any(y[sel] >= 100):
            raise FitError(f"endpoint {e}: observations >= 100% cannot have a logit error model")
    rows = np.asarray(d.point_row)[s_idx, p_idx]
    line = ds.records["LINE"].to_numpy()[rows]
    corr = list(priors.correlation.get("parameters", [])) if priors.correlation else []
    return FitSpec(
        model=model,
        priors=priors,
        dataset=ds,
        padded=padded,
        estimated=estimated,
        fixed=fixed,
        effects=effects,
        effect_values=values,
        dropped_effects=dropped,
        endpoints=present,
        obs_subject=s_idx.astype(np.int32),
        obs_point=p_idx.astype(np.int32),
        obs_endpoint=obs_ep,
        obs_y=y,
        obs_lloq=lloq,
        obs_blq=blq,
        obs_time=np.asarray(d.point_time)[s_idx, p_idx],
        obs_line=line,
        correlated=[p for p in corr if p in estimated],
        requested_covariates=requested,
    )


# ---------------------------------------------------------------------------------------------
# The NumPyro model


# The hierarchy's equations live in pkpd.inference.hierarchy (one copy for fits, simulation,
# predictive checks and synthetic fits); these names are kept for the fit's own use.
_to_unconstrained = to_unconstrained
_from_unconstrained = from_unconstrained
_subject_mean = subject_mean


def model_options(model) -> dict:
    """The constructor options of a model that differ from its registry entry (JSON-ready)."""
    import dataclasses

    if not dataclasses.is_dataclass(model):
        return {}
    from pkpd.models import MODELS

    base = MODELS.get(model.name)
    out = {}
    for f in dataclasses.fields(model):
        v = getattr(model, f.name)
        if base is None or getattr(base, f.name, None) != v:
            out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def _sample(name, d: Dist):
    return numpyro.sample(name, d.numpyro())


def _trim(sub, n_d, n_p):
    """Subject arrays cut to the first ``n_d`` dose slots and ``n_p`` points."""
    import dataclasses as dc

    out = {}
    for f in dc.fields(sub):
        x = getattr(sub, f.name)
        if f.name.startswith("dose_"):
            x = x[:, :n_d]
        elif f.name.startswith("point_"):
            x = x[:, :n_p]
        out[f.name] = x
    return type(sub)(**out)


def _unique_points(sub):
    """Subject arrays with each subject's prediction points made unique, and the map back.

    Two records predict the same value when they share the time, the segment, the doses that
    act on them (:func:`pkpd.pk.analytic.host_given_mask`: order at equal times included) and
    the point covariates: e.g. a parent and a metabolite sample drawn together. Models may use
    only those (the prediction API's contract), so each such set is predicted once. Returns
    ``(unique, inverse)`` with ``inverse[s, p]`` the unique slot of point ``p``; padded points
    map to an invalid slot (whose value is 0 with pair layouts).
    """
    import dataclasses as dc

    from pkpd.pk.analytic import TIME_TOL, host_given_mask

    given = host_given_mask(sub)
    p_t = np.asarray(sub.point_time, dtype=float)
    S, P = p_t.shape
    valid = np.asarray(sub.point_valid)
    cov = np.asarray(sub.point_cov, dtype=float).reshape(S, P, -1)
    seg = np.asarray(sub.point_segment)
    reps, inverse = [], np.zeros((S, P), dtype=np.int32)
    for i in range(S):
        slots: dict[tuple, int] = {}
        rep = []
        for j in range(P):
            key = (
                bool(valid[i, j]),
                round(float(p_t[i, j]) / TIME_TOL),
                int(seg[i, j]),
                given[i, :, j].tobytes(),
                cov[i, j].tobytes(),
            )
            if key not in slots:
                slots[key] = len(rep)
                rep.append(j)
            inverse[i, j] = slots[key]
        reps.append(rep)
    U = max(len(r) for r in reps)
    # padding slots repeat the subject's last point, marked invalid
    take = np.array([r + [r[-1]] * (U - len(r)) for r in reps])
    pad = np.array([[k >= len(r) for k in range(U)] for r in reps])
    out = {}
    for f in dc.fields(sub):
        x = getattr(sub, f.name)
        if f.name.startswith("point_"):
            x = np.take_along_axis(
                np.asarray(x), take.reshape(take.shape + (1,) * (np.ndim(x) - 2)), axis=1
            )
            if f.name in ("point_valid", "point_mask"):
                x = x & ~pad
        out[f.name] = x
    return type(sub)(**out), inverse


def observation_predictor(spec: FitSpec):
    """``predict(params) -> {endpoint: [S, P], "ok": [S]}`` for the fit's subjects.

    ``params`` maps each parameter to ``[S]`` values. Subjects are grouped by the endpoints the
    model marks costly that they have data on, and each group's arrays are
    trimmed to its doses and observation points; values are exact at every observation point
    of the fit and 0 elsewhere. The model is told the dose kinds the data hold.
    """
    from pkpd.pk.analytic import kinds_in_data, pair_layout

    S = spec.n_subjects
    model = spec.model.with_dose_kinds(kinds_in_data(spec.padded.data))
    # Subjects grouped by the endpoints they have data for: each group predicts only those
    # (a PK-only study does not pay for the PD ODE of another study).
    groups = []
    have: dict[int, set] = {}
    for s_i, e_i in zip(spec.obs_subject.tolist(), spec.obs_endpoint.tolist(), strict=True):
        have.setdefault(s_i, set()).add(spec.endpoints[e_i])
    # Subjects are grouped by the costly endpoints (an integration or a per-subject
    # response worth skipping, as the model's ``costly_endpoints`` says) they have data on;
    # each group predicts those and every cheap endpoint of the fit (closed forms cost
    # little), so at most 2^(costly endpoints) variants need compiling. On the bundled
    # temsirolimus data: four groups (S6K, VEGF, VEGF + PD-1, PK only), where one group
    # for every PD subject computed S6K for 365 subjects and PD-1 for 141 (data: 24, 30).
    costly = set(model.costly_endpoints)
    cheap = tuple(e for e in spec.endpoints if e not in costly)
    by_set: dict[tuple, list[int]] = {}
    for s_i in range(S):
        mine = have.get(s_i, set())
        if not mine:
            continue
        key = cheap + tuple(e for e in spec.endpoints if e in costly and e in mine)
        by_set.setdefault(key, []).append(s_i)
    for key, idx in by_set.items():
        if key:
            groups.append((model.with_endpoints(key), key, np.asarray(idx)))
    P = spec.padded.data.point_time.shape[1]

    # Each group is trimmed to the doses and observation points its subjects have (padding
    # comes last), so a small study of few doses does not pay for the largest one.
    trimmed = []
    for variant, key, idx in groups:
        dm = np.asarray(spec.padded.data.dose_mask)[idx]
        pm = np.asarray(spec.padded.data.point_mask)[idx]
        n_d = max(1, int(np.max(np.where(dm.any(0))[0], initial=-1)) + 1)
        n_p = max(1, int(np.max(np.where(pm.any(0))[0], initial=-1)) + 1)
        sub = _trim(jax.tree.map(lambda x, i=idx: np.asarray(x)[i], spec.padded.data), n_d, n_p)
        sub, inverse = _unique_points(sub)
        sub = dataclasses.replace(sub, pairs=pair_layout(sub))
        grid = variant.precompute(sub)
        if grid is not None:
            sub = dataclasses.replace(sub, grid=grid)
        fn = jax.vmap(variant.predict)
        trimmed.append((fn, key, idx, jax.tree.map(jnp.asarray, sub), n_p, jnp.asarray(inverse)))

    def predict(params):
        out = {e: jnp.zeros((S, P)) for e in spec.endpoints}
        ok = jnp.ones(S, dtype=bool)
        for fn, key, idx, sub, n_p, inverse in trimmed:
            res = fn({k: v[idx] for k, v in params.items()}, sub)
            ok = ok.at[idx].set(res.get("ok", jnp.ones(len(idx), dtype=bool)))
            for e in key:
                out[e] = out[e].at[idx, :n_p].set(jnp.take_along_axis(res[e], inverse, axis=1))
        out["ok"] = ok
        return out

    return predict


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

    levels = spec.levels

    def level_frame(p, pop):
        return _level_frame(levels[p], pop.__getitem__)

    def numpyro_model(obs=None):
        pop, eta_study, beta, eta = {}, {}, {}, {}

        def study_effects(p):
            """Sample ``p``'s between-study SD and standardised effects; record η_study."""
            om = _sample(f"omega_study_{p}", pri.parameters[p].bsv_study)
            with numpyro.plate("study", n_study):
                zs = numpyro.sample(f"z_study_{p}", nd.Normal(0.0, 1.0))
            eta_study[p] = numpyro.deterministic(f"eta_study_{p}", om * zs)[study]
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
                    f"pop_{p}", _from_unconstrained(t, pp.transform) * pp.multiplier
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
            L = numpyro.sample(
                "corr_cholesky",
                nd.LKJCholesky(len(corr), concentration=pri.correlation.get("lkj_eta", 2.0)),
            )
            if set(corr) <= centered_set:
                loc = jnp.stack(
                    [_subject_mean(spec, p, pop, eta_study, beta, eff_vals, S) for p in corr], -1
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
                eta[p] = numpyro.deterministic(f"eta_{p}", eta_c[:, k])
        for p in spec.estimated:
            pp = pri.parameters[p]
            if pp.bsv is not None and p not in corr:
                om = _sample(f"omega_{p}", pp.bsv)
                if p in centered_set:  # centred for the subjects whose data pin them
                    c = jnp.asarray(spec.centered_mask(p))
                    loc = _subject_mean(spec, p, pop, eta_study, beta, eff_vals, S)
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
        params = individual_parameters(
            spec, pop, eta=eta, eta_study=eta_study, beta=beta, effect_values=eff_vals, n=S
        )
        for p in spec.estimated:
            numpyro.deterministic(f"theta_{p}", params[p])
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


# ---------------------------------------------------------------------------------------------
# Fitting


def _data_sha256(ds: Dataset) -> str:
    if ds.source and Path(ds.source).exists():
        return hashlib.sha256(Path(ds.source).read_bytes()).hexdigest()
    return hashlib.sha256(ds.records.to_csv(index=False).encode()).hexdigest()


class _Objective:
    """The potential energy (negative log density) of a NumPyro model on the flat
    unconstrained scale, compiled once with its gradient.

    Finding a start, the MAP optimisation and the checks of the chain starts all call the same
    compiled function from the host, so the model is compiled once for all of them (each
    ``jax.jit`` of a function containing the model compiles the model again; NumPyro's own
    ``initialize_model`` evaluates the gradient eagerly, op by op, which took 14 s on the
    temsirolimus PK model against 1.5 s to compile it).
    """

    def __init__(self, numpyro_model, obs, proto):
        from numpyro.infer.util import potential_energy

        _, unravel = jax.flatten_util.ravel_pytree(proto)
        self.unravel = unravel

        def pe(x):
            return potential_energy(numpyro_model, (), {"obs": obs}, unravel(x))

        self.pe = pe
        self.value_and_grad = jax.jit(jax.value_and_grad(pe))

    def __call__(self, x) -> tuple[float, np.ndarray]:
        v, g = self.value_and_grad(jnp.asarray(x, dtype=float))
        return float(v), np.asarray(g, dtype=float)

    def hvp(self, x, v, h: float = 1e-4) -> np.ndarray:
        """Hessian-vector product at ``x`` along ``v``: a central difference of the compiled
        gradient (two calls; no second compilation)."""
        return (self(x + h * v)[1] - self(x - h * v)[1]) / (2 * h)

    def usable(self, x) -> bool:
        """A finite potential energy and gradient at ``x``."""
        v, g = self(x)
        return bool(np.isfinite(v) and np.all(np.isfinite(g)))


def _init_function(numpyro_model, obs, strategy):
    """``key -> unconstrained values`` of the model's latent sites under an init strategy
    (compiled: the model runs once, abstractly, to find its sites)."""
    from numpyro.distributions.transforms import biject_to
    from numpyro.handlers import seed, substitute, trace

    def run(key):
        tr = trace(substitute(seed(numpyro_model, key), substitute_fn=strategy)).get_trace(obs=obs)
        return {
            k: biject_to(v["fn"].support).inv(v["value"])
            for k, v in tr.items()
            if v["type"] == "sample" and not v["is_observed"]
        }

    return jax.jit(run)


def _valid_start(numpyro_model, obs, key):
    """A start with a finite log density and gradient, and the model's compiled objective.

    The prior medians first; where the model cannot be evaluated there (a solver failing, a
    prediction not finite), random points uniform in (-2, 2) on the unconstrained scale, as
    NumPyro's initialisation tries them. Returns ``(flat start, objective)``.
    """
    from numpyro.infer.initialization import init_to_median, init_to_uniform

    k_med, k_uni = jax.random.split(key)
    u = _init_function(numpyro_model, obs, init_to_median(num_samples=15))(k_med)
    objective = _Objective(numpyro_model, obs, u)
    x = jax.flatten_util.ravel_pytree(u)[0]
    if objective.usable(x):
        return np.asarray(x), objective
    uniform = _init_function(numpyro_model, obs, init_to_uniform(radius=2))
    for k in jax.random.split(k_uni, 100):
        x = jax.flatten_util.ravel_pytree(uniform(k))[0]
        if objective.usable(x):
            return np.asarray(x), objective
    raise FitError(
        "no starting point with a finite log density was found (the model fails or predicts "
        "non-finite values at the prior medians and at 100 random points); check the priors' "
        "medians and the data"
    )


def _map_estimate(objective: _Objective, x0, max_iter: int = 2000):
    """MAP point on the flat unconstrained scale: L-BFGS (scipy) from a valid start.

    Runs on the host around the compiled objective. Where the model cannot be evaluated the
    objective returns a huge value (the line search backs off); the best finite point seen
    is returned with its potential energy, so the result is never worse than the start.
    """
    from scipy.optimize import minimize

    huge = float(np.finfo(float).max) ** 0.5
    best = {"v": np.inf, "x": np.asarray(x0, dtype=float)}

    def fun(x):
        v, g = objective(x)
        if not (np.isfinite(v) and np.all(np.isfinite(g))):
            return huge, np.zeros_like(x)
        if v < best["v"]:
            best.update(v=v, x=np.array(x))
        return v, g

    minimize(
        fun,
        best["x"],
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": int(max_iter), "maxfun": 2 * int(max_iter)},
    )
    return best["x"], best["v"]


def fit(
    model,
    data,
    priors=None,
    *,
    chains: int = 4,
    warmup: int = 500,
    draws: int = 500,
    seed: int = 0,
    method: str = "nuts",
    covariates: Sequence[str] | None = None,
    endpoints: Sequence[str] | None = None,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    mass_matrix: str = "diagonal",
    map_steps: int = 2000,
    progress_bar: bool = True,
    parameterization: str = "auto",
):
    """Fit a population model to a dataset.

    Parameters
    ----------
    model : str or model object
        ``"one_cmt_oral"``, ``"temsirolimus"``, ... or a model object.
    data : Dataset, path or DataFrame
    priors : path, Priors or None
        ``None``: the model's bundled priors.
    chains, warmup, draws : int
        NUTS settings. Chains run in parallel when there are as many JAX devices (on CPU set
        ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before JAX starts; the CLI does),
        vectorised otherwise.
    seed : int
        Seed of every random number used: the same seed gives the same draws.
    method : {"nuts", "map"}
        ``"map"``: a quick fit (:mod:`pkpd.inference.laplace`): the mode of the population
        values' posterior with the subject effects integrated out by a Laplace approximation
        per subject (FOCE-I/Laplacian-like), and ``draws`` draws (one chain) from the Laplace
        approximation around it, the subject effects from their conditional Gaussians; what
        was done is in the attributes (``map_kind``, ``map_converged``,
        ``laplace_flat_parameters``, ``laplace_prior_dominated``, ...).
    covariates : sequence of str, optional
        Covariate effects (names in the priors) to include; default every effect whose data
        column exists.
    endpoints : sequence of str, optional
        Endpoints to fit (default: every endpoint of the data the model predicts).
    parameterization : {"auto", "centered", "noncentered"}
        Of the subject effects in NUTS. Where the data inform each subject's value well (rich
        PK), the centred form (``T(θ_i) ~ Normal(mean_i, ω)``) samples far better than the
        non-centred one (``T(θ_i) = mean_i + ω z_i``), whose ``z_i`` are then tightly tied to the
        population values; where they do not (sparse data, a PD parameter the design barely
        touches), the non-centred form avoids the funnel. ``"auto"`` (default) chooses per
        parameter and subject from the curvature at the MAP (:func:`_choose_centered`); the
        choice is stored in the fit (``attrs["centered_parameters"]``, and the number of
        subjects centred per parameter in ``attrs["centered_subjects"]``). The chains check the
        choice: when more than 1% of the draws diverge and the divergent draws sit at small ω
        of a centred parameter (the centred funnel), the fit is rerun with every subject
        effect non-centred and the run with fewer divergences kept
        (:func:`_fallback_centered`; ``attrs["parameterization_check"]``). Study effects are
        always non-centred (few studies). The MAP start is computed non-centred (the centred joint
        density has no mode at finite ω). IC50s the model pairs with a Hill exponent
        (``hill_levels``; temsirolimus: S6K) are sampled through their level at a reference
        concentration chosen at the MAP (:func:`_choose_levels`): an exact change of variables
        that straightens the curved IC50–Hill ridge; recorded in ``attrs["sampled_levels"]``.
        With ``"auto"`` their subject effects are then non-centred (they follow the level).
        A parameter with between-study effects is sampled through the mean value of the
        studies with data on it (:func:`_choose_anchors`; ``attrs["anchored_parameters"]``),
        not its population value, which the data pin only through the study effects' prior:
        the same posterior.
    map_steps : int
        Iteration limit of the MAP optimisation (L-BFGS on the unconstrained scale, from the
        prior medians) that gives NUTS its start (the joint mode) and ``method="map"`` its
        mode (of the population values, subject effects integrated out).
    target_accept, max_tree_depth : float, int
        NUTS settings.
    mass_matrix : {"diagonal", "dense-population", "dense"}
        NUTS's adapted mass matrix: diagonal (default); one dense block over the
        population-level sites (typical values, between-subject and residual SDs, covariate
        and study effects; subject effects stay diagonal), which helps when population values
        are correlated a posteriori; or dense over everything (only for small models: it is
        estimated from the warmup draws). Adaptation starts from the Laplace covariance at the
        chain start (:func:`_laplace_covariance`; its population block for the dense block),
        not NumPyro's identity: on the full temsirolimus data the first warmup iterations
        took about 110 leapfrog steps instead of 550.

    Returns
    -------
    arviz.InferenceData
        Groups ``posterior`` (``pop_<param>`` on the natural scale and canonical units,
        ``omega_<param>``, ``omega_study_<param>``, ``eta_<param>`` [subject],
        ``eta_study_<param>`` [study], ``theta_<param>`` [subject] individual values,
        ``beta_<effect>``, ``sigma_*``), ``sample_stats``, ``log_likelihood`` (``y`` [obs]),
        ``observed_data``, ``constant_data``; provenance in ``attrs``. Every name is
        netCDF-safe (:mod:`pkpd.inference.names`): data columns are ``record_<safe name>``
        with the column's name in the ``original_name`` attribute
        (:func:`pkpd.inference.posterior.data_columns`); an effect on a column such as
        ``CRCL_mL/min`` is ``beta_cl_crcl_ml_min``, its ``covariate`` attribute the column's
        name. What the file will hold apart from the draws is written once to a temporary
        file before sampling (:func:`check_saveable`), so the fit cannot fail when saved.
    """
    if method not in ("nuts", "map"):
        raise FitError(f"method={method!r}; expected 'nuts' or 'map'")
    for name, v in (("chains", chains), ("warmup", warmup), ("draws", draws)):
        if not isinstance(v, int) or v < (0 if name == "warmup" else 1):
            raise FitError(f"{name}={v!r}; expected a positive whole number")
    if mass_matrix not in ("diagonal", "dense-population", "dense"):
        raise FitError(
            f"mass_matrix={mass_matrix!r}; expected 'diagonal', 'dense-population' or 'dense'"
        )
    if parameterization not in ("auto", "centered", "noncentered"):
        raise FitError(
            f"parameterization={parameterization!r}; expected 'auto', 'centered' or 'noncentered'"
        )
    timing: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name):
        nonlocal clock
        now = time.perf_counter()
        timing[name] = round(now - clock, 3)
        clock = now

    spec = prepare(model, data, priors, covariates=covariates, endpoints=endpoints)
    from pkpd.models.predict import warn_concentration_scale

    warn_concentration_scale(spec.model, spec.dataset, spec.priors.typical())
    # everything but the draws written once to a temporary file: what netCDF refuses stops
    # the fit now, not at save time after sampling
    check_saveable(spec, dict(seed=seed, method=method, chains=chains, warmup=warmup, draws=draws))
    from pkpd.inference.checks import zero_prediction_problems

    zero = zero_prediction_problems(spec)
    if zero:
        raise FitError("; ".join(zero))
    lap("prepare")
    spec.parameterization = parameterization if method == "nuts" else "noncentered"
    nm_start = build_model(dataclasses.replace(spec, parameterization="noncentered"))
    obs = jnp.asarray(np.where(spec.obs_blq, np.nan_to_num(spec.obs_lloq, nan=1.0), spec.obs_y))
    key = jax.random.PRNGKey(seed)
    k_map, k_run, k_jit, k_ll = jax.random.split(key, 4)
    x_start, objective = _valid_start(nm_start, obs, k_map)
    # the joint mode (population and subject effects) is NUTS's start; method="map" finds the
    # mode of the population values with the subject effects integrated out instead
    # (pkpd.inference.laplace), from the same start
    flat_map, map_energy = (
        _map_estimate(objective, x_start, max_iter=map_steps)
        if method == "nuts"
        else (x_start, float("nan"))
    )
    flat_map = jnp.asarray(flat_map)
    unravel = objective.unravel
    u0 = unravel(flat_map)
    lap("map")
    bsv = tuple(p for p in spec.estimated if spec.priors.parameters[p].bsv is not None)
    if spec.parameterization == "centered":
        spec.centered = bsv
    elif spec.parameterization == "auto" and bsv:
        spec.centered, spec.centered_subjects = _choose_centered(spec, objective, flat_map)
        lap("parameterization")
    if method == "nuts":
        spec.levels = _choose_levels(
            spec, objective, flat_map, tuple(sorted(_population_sites(nm_start, obs)))
        )
        spec.anchors = _choose_anchors(spec)
        if spec.parameterization == "auto" and spec.levels:
            # A levelled IC50's subject values, non-centred, ride the population's level
            # (log IC50_i = k − ℓ/h + ω z_i), so the ridge is gone without centring; centred,
            # they keep the funnel of their ω (on the bundled temsirolimus data: all 9
            # divergences of a 4 × 500 fit at small omega_s6k_ic50, 0 non-centred).
            spec.centered = tuple(p for p in spec.centered if p not in spec.levels)
            spec.centered_subjects = {
                p: m for p, m in spec.centered_subjects.items() if p not in spec.levels
            }
        lap("levels")
    nm, chain_objective = nm_start, objective
    if spec.centered or spec.levels or spec.anchors:
        nm = build_model(spec)
        u0 = _centered_start(spec, nm, nm_start, obs, u0)
        if method == "nuts":
            chain_objective = _Objective(nm, obs, u0)
    extra = {}
    inverse_mass = None
    laplace_flat_dirs = 0
    map_attrs: dict = {}
    if method == "nuts":
        nuts = dict(
            obs=obs,
            key_run=k_run,
            key_jit=k_jit,
            chains=chains,
            warmup=warmup,
            draws=draws,
            target_accept=target_accept,
            max_tree_depth=max_tree_depth,
            mass_matrix=mass_matrix,
            progress_bar=progress_bar,
        )
        samples, extra, inverse_mass = _run_nuts(spec, nm, chain_objective, u0, lap=lap, **nuts)
        fallback = _fallback_centered(spec, samples, extra, warmup)
        if fallback is not None:
            # auto centred some subject effects and the chains diverged: the same fit with
            # every subject effect non-centred (levels and anchors kept), and the run with
            # fewer divergent transitions kept (_fallback_centered)
            spec_nc = dataclasses.replace(spec, centered=(), centered_subjects={})
            nm_nc = build_model(spec_nc) if (spec.levels or spec.anchors) else nm_start
            u_nc = unravel(flat_map)
            if spec.levels or spec.anchors:
                u_nc = _centered_start(spec_nc, nm_nc, nm_start, obs, u_nc)
            run2 = _run_nuts(
                spec_nc,
                nm_nc,
                _Objective(nm_nc, obs, u_nc),
                u_nc,
                lap=lambda name: lap(f"{name}_noncentered"),
                **nuts,
            )
            n1, n2 = int(extra["diverging"].sum()), int(run2[1]["diverging"].sum())
            keep_second = n2 < n1
            parameterization_check = dict(
                centered=list(spec.centered),
                funnel=list(fallback),
                divergences_centered=n1,
                divergences_noncentered=n2,
                kept="noncentered" if keep_second else "auto",
            )
            if keep_second:
                spec, nm = spec_nc, nm_nc
                samples, extra, inverse_mass = run2
        else:
            parameterization_check = {}
        n_chains = chains
    else:
        from pkpd.inference.laplace import laplace_marginal_fit

        samples, map_attrs, map_log_density = laplace_marginal_fit(
            spec, nm, obs, flat_map, unravel, k_run, draws, map_steps
        )
        map_energy = -map_log_density
        laplace_flat_dirs = map_attrs.pop("laplace_flat_directions")
        n_chains = 1
        parameterization_check = {}
        lap("laplace")
    flat = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), samples)
    # deterministic sites (theta, eta, pop of percentages) for every draw
    from numpyro.infer import Predictive
    from numpyro.infer.util import log_likelihood

    sites = _deterministic_sites(nm, obs)

    def pointwise(flat):
        det = Predictive(nm, posterior_samples=flat, return_sites=sites)(k_ll, obs=obs)
        return det, log_likelihood(nm, {**flat, **det}, obs=obs)["y"]

    det, ll = jax.jit(pointwise)(flat)  # compiled: run eagerly, every op compiles on its own
    flat = {**flat, **det}
    lap("pointwise")
    idata = _to_inference_data(
        spec,
        flat,
        np.asarray(ll),
        n_chains,
        extra,
        attrs=dict(
            seed=seed,
            method=method,
            chains=chains if method == "nuts" else 1,
            warmup=warmup if method == "nuts" else 0,
            draws=draws,
            map_log_density=-map_energy,
            parameterization=spec.parameterization,
            centered_parameters=list(spec.centered),
            # auto's choice checked by its chains (_fallback_centered): {} when nothing was
            # centred or the chains did not diverge, else the divergences of both runs and
            # which was kept
            parameterization_check=parameterization_check,
            # subjects sampled centred, per parameter with subject effects (all, some, none)
            centered_subjects={
                p: int(np.sum(spec.centered_mask(p)))
                for p in spec.estimated
                if spec.priors.parameters[p].bsv is not None
            },
            # IC50s sampled through their Hill-scaled level (_choose_levels): hill, scale and
            # reference concentration (in the IC50's unit) of each
            sampled_levels={
                p: {
                    "hill": h,
                    "scale": sc,
                    "reference": float(np.exp(r)),
                    "unit": spec.priors.parameters[p].unit,
                }
                for p, (h, sc, r) in spec.levels.items()
            },
            # parameters sampled through the mean value of the studies with data on them
            # (_choose_anchors): {parameter: [study, ...]}
            anchored_parameters={
                p: [str(spec.padded.studies[i]) for i in idx] for p, idx in spec.anchors.items()
            },
            mass_matrix=mass_matrix if method == "nuts" else "",
            # NUTS's initial mass matrix: "laplace" (see _laplace_covariance) or "identity"
            # (NumPyro's default, where the gradient is not finite near the start)
            initial_mass_matrix=(
                ("laplace" if inverse_mass is not None else "identity") if method == "nuts" else ""
            ),
            laplace_flat_directions=laplace_flat_dirs,
            # method="map": what was done (pkpd.inference.laplace.laplace_marginal_fit)
            **map_attrs,
        ),
    )
    lap("output")
    timing["total"] = round(sum(timing.values()), 3)
    # wall seconds per phase (compilation included where it happens), for the user and the
    # benchmarks: prepare, map (start and polish), starts, nuts (warmup + draws) or laplace,
    # pointwise (deterministics and log-likelihood of every draw), output
    idata.attrs["timing_s"] = json.dumps(timing)
    return idata


#: Divergent transitions, as a fraction of the draws, above which a fit whose ``auto``
#: parameterisation centred some subject effects is rerun with every subject effect
#: non-centred (:func:`_fallback_centered`).
FALLBACK_DIVERGENCE_FRACTION = 0.01
#: Fewer warmup iterations than this and divergences say nothing about the geometry (the step
#: size is not adapted yet): no rerun.
FALLBACK_MIN_WARMUP = 100
#: How far below the mean of all draws (in posterior SDs of log ω) the divergent draws' mean
#: log ω of a centred parameter must sit to blame its centring.
FALLBACK_FUNNEL_SD = 0.5


def _fallback_centered(spec, samples, extra, warmup: int) -> list[str] | None:
    """Whether ``auto``'s centring is to be checked by a non-centred rerun.

    ``auto`` centres a subject's effect where the curvature at the MAP says the data pin it
    (:func:`_choose_centered`); that is a local judgement, and the centred form funnels where it
    is wrong: divergent transitions where that parameter's ω is small. The chains themselves
    are the check: if more than :data:`FALLBACK_DIVERGENCE_FRACTION` of the draws diverged and
    the divergent draws sit at small ω of a centred parameter (their mean log ω at least
    :data:`FALLBACK_FUNNEL_SD` posterior SDs below the mean of all draws: the funnel's
    signature), the fit is run again with every subject effect non-centred (same key, start,
    levels and anchors) and the run with fewer divergences is kept; both counts are stored
    (``attrs["parameterization_check"]``). Divergences elsewhere (a non-centred PD parameter,
    a curved ridge) are not the centring's doing and get no rerun. A fit that centred nothing,
    or did not diverge, costs nothing more; one with fewer than :data:`FALLBACK_MIN_WARMUP`
    warmup iterations is not checked. Returns the centred parameters whose funnel the
    divergences show, or ``None``.
    """
    if spec.parameterization != "auto" or not spec.centered or warmup < FALLBACK_MIN_WARMUP:
        return None
    div = np.asarray(extra["diverging"]).reshape(-1).astype(bool)
    if not div.sum() > FALLBACK_DIVERGENCE_FRACTION * div.size:
        return None
    funnels = []
    for p in spec.centered:
        name = f"omega_{p}"
        if name not in samples:
            continue
        log_om = np.log(np.asarray(samples[name]).reshape(-1))
        sd = log_om.std()
        if sd > 0 and (log_om[div].mean() - log_om.mean()) / sd <= -FALLBACK_FUNNEL_SD:
            funnels.append(p)
    return funnels or None


def _run_nuts(
    spec,
    nm,
    objective: _Objective,
    u0,
    *,
    obs,
    key_run,
    key_jit,
    chains,
    warmup,
    draws,
    target_accept,
    max_tree_depth,
    mass_matrix,
    progress_bar,
    lap=lambda name: None,
):
    """NUTS on the chain model ``nm`` from jittered starts around ``u0``, its initial mass
    matrix the Laplace covariance there. Returns ``(samples by chain, sample stats, inverse
    mass matrix or None)``."""
    from numpyro.infer import MCMC, NUTS

    jit = _jittered_starts(objective, u0, key_jit, chains)
    lap("starts")
    inverse_mass = None
    # initial mass matrix: the Laplace covariance at the start (NUTS adapts it from there)
    population = tuple(sorted(_population_sites(nm, obs)))
    laplace = _laplace_covariance(
        objective, jax.flatten_util.ravel_pytree(u0)[0], population, spec.n_subjects
    )
    if laplace is not None:
        var, pop_idx, sigma_pp = laplace
        inverse_mass = jnp.asarray(var)
    lap("mass_matrix")
    dense = False
    if mass_matrix == "dense":
        dense = True
    elif mass_matrix == "dense-population":
        dense = [population]
        if laplace is not None:
            rest = np.setdiff1d(np.arange(var.size), pop_idx)
            inverse_mass = {population: jnp.asarray(sigma_pp)}
            if rest.size:
                inverse_mass[tuple(sorted(set(u0) - set(population)))] = jnp.asarray(var[rest])
    kernel = NUTS(
        nm,
        target_accept_prob=target_accept,
        max_tree_depth=max_tree_depth,
        dense_mass=dense,
        inverse_mass_matrix=inverse_mass,
    )
    method_chain = "parallel" if jax.local_device_count() >= chains and chains > 1 else "vectorized"
    mcmc = MCMC(
        kernel,
        num_warmup=warmup,
        num_samples=draws,
        num_chains=chains,
        chain_method=method_chain if chains > 1 else "sequential",
        progress_bar=progress_bar,
    )
    mcmc.run(
        key_run,
        obs=obs,
        init_params=jit if chains > 1 else jax.tree.map(lambda x: x[0], jit),
        extra_fields=(
            "diverging",
            "energy",
            "num_steps",
            "accept_prob",
            "potential_energy",
            "adapt_state.step_size",
        ),
    )
    samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
    lap("nuts")
    fields = mcmc.get_extra_fields(group_by_chain=True)
    extra = {
        "diverging": np.asarray(fields["diverging"]),
        "energy": np.asarray(fields["energy"]),
        "n_steps": np.asarray(fields["num_steps"]),
        "acceptance_rate": np.asarray(fields["accept_prob"]),
        "lp": -np.asarray(fields["potential_energy"]),
        "step_size": np.asarray(fields["adapt_state.step_size"]),
        "tree_depth": np.floor(np.log2(np.asarray(fields["num_steps"]) + 1)).astype(int),
    }
    return samples, extra, inverse_mass


def _jittered_starts(objective: _Objective, u0, key, chains, scale=0.05):
    """One start per chain: the MAP point plus N(0, scale²) noise on the unconstrained scale.

    Chains started apart show whether they agree (R-hat); a jittered start whose log density
    or gradient is not finite (e.g. a solver failing there) is pulled back toward the MAP,
    halving the noise until it is (the MAP itself, at worst).
    """
    flat0 = np.asarray(jax.flatten_util.ravel_pytree(u0)[0])
    starts = []
    for k in jax.random.split(key, chains):
        noise = np.asarray(jax.random.normal(k, flat0.shape))
        s = scale
        for _ in range(8):
            x = flat0 + s * noise
            if objective.usable(x):
                break
            s /= 2
        else:
            x = flat0
            if not objective.usable(x):
                raise FitError(
                    "the MAP start has a non-finite log density or gradient and no point near "
                    "it is better; check the priors and data (or try method='map' to inspect "
                    "the mode)"
                )
        starts.append(objective.unravel(jnp.asarray(x)))
    return jax.tree.map(lambda *xs: jnp.stack(xs), *starts)


def _centered_start(spec, nm, nm_start, obs, u_start):
    """The unconstrained start of the chain model (partly centred, levelled: ``spec.centered``,
    ``spec.levels``) at the non-centred MAP point (compiled: run eagerly, the two model passes
    took seconds)."""
    from numpyro.infer.util import constrain_fn, unconstrain_fn

    pri = spec.priors
    centered = set(spec.centered)
    corr_centered = bool(spec.correlated) and set(spec.correlated) <= centered

    def convert(u):
        vals = constrain_fn(nm_start, (), {"obs": obs}, u, return_deterministic=True)
        init = {k: v for k, v in vals.items() if k in u}
        zc = {
            p: _to_unconstrained(
                vals[f"theta_{p}"] / pri.parameters[p].multiplier, pri.parameters[p].transform
            )
            for p in centered
        }
        for p, idx in spec.anchors.items():
            pp = pri.parameters[p]
            t = _to_unconstrained(
                init.pop(f"pop_{p}", vals[f"pop_{p}"]) / pp.multiplier, pp.transform
            )
            init.pop(f"pop_{p}_fraction", None)
            init[f"pop_{p}_anchor"] = t + jnp.mean(vals[f"eta_study_{p}"][jnp.asarray(idx)])
        for p, level in spec.levels.items():
            h, k = _level_frame(level, lambda q: vals[f"pop_{q}"])
            init[f"pop_{p}_level"] = h * (k - jnp.log(init.pop(f"pop_{p}")))
            if p in zc:
                zc[p] = h * (k - zc[p])
        if corr_centered:
            init.pop("z_corr")
            init["zc_corr"] = jnp.stack([zc[p] for p in spec.correlated], -1)
        for p, v in zc.items():
            if p not in spec.correlated:
                z = init.pop(f"z_{p}")
                init[f"zc_{p}"] = jnp.where(jnp.asarray(spec.centered_mask(p)), v, z)
        return unconstrain_fn(nm, (), {"obs": obs}, init)

    return jax.jit(convert)(u_start)


def _choose_centered(spec, objective: _Objective, flat_map):
    r"""Which subjects' effects the data inform well enough to sample centred, per parameter.

    At the non-centred MAP, the Hessian of the potential in one subject's standardised effects
    :math:`z_i` (one per parameter with between-subject variability) is the identity from their
    N(0, 1) priors plus what the subject's data add; its inverse approximates their posterior
    covariance. Subjects are independent given the population values, so one Hessian-vector
    product per parameter (along that parameter's :math:`z` of all subjects at once, here a
    central difference of the compiled gradient) gives every subject's block. Where the data
    dominate (posterior variance of :math:`z_{p,i}` at most 0.5: the data carry at least the
    prior's weight) the centred form samples better; where the prior dominates, the non-centred
    one (Betancourt & Girolami 2015, "Hamiltonian Monte Carlo for hierarchical models";
    Gorinova et al. 2020, "Automatic reparameterisation of probabilistic programs"). The choice
    is made subject by subject: in a multi-study fit an endpoint measured in one study informs
    its parameters there and nowhere else (on the bundled temsirolimus data VEGF's 141 subjects
    of 365), and either form for everyone leaves a funnel on one side. Marginal, not
    conditional, variances: one late sample pins down a combination of CL and V, not V.
    A correlated block is centred, for every subject, when the mean variance of each of its
    parameters qualifies.

    Study effects stay non-centred. Centring them where a study's subjects pin its mean (the
    same curvature, summed over the study) was tried on the bundled 365-subject data: CL
    centred in two of four studies, VEGF baseline in one; divergences rose from 3 to 59 per
    400 draws (two, three studies per parameter are too few for the centred form's funnel).

    Returns ``(parameters, subjects)``: the parameters centred for at least one subject, and
    for those centred for some subjects only, a bool array over subjects.
    """
    pri = spec.priors
    u = objective.unravel(jnp.asarray(flat_map))
    x = np.asarray(flat_map)
    # (site, column) of each parameter's standardised subject effects
    where = {p: ("z_corr", k) for k, p in enumerate(spec.correlated)}
    for p in spec.estimated:
        if pri.parameters[p].bsv is not None and p not in where:
            where[p] = (f"z_{p}", None)
    names = list(where)

    def column(tree, p):
        site, k = where[p]
        a = np.asarray(tree[site])
        return a if k is None else a[:, k]

    cols = []
    for p in names:
        site, k = where[p]
        v = jax.tree.map(jnp.zeros_like, u)
        v[site] = jnp.ones_like(u[site]) if k is None else v[site].at[:, k].set(1.0)
        flat_v = np.asarray(jax.flatten_util.ravel_pytree(v)[0])
        hv = objective.hvp(x, flat_v)
        tree = objective.unravel(jnp.asarray(hv))
        cols.append(np.stack([column(tree, q) for q in names], axis=-1))  # [S, k]
    H = np.stack(cols, axis=-1)  # [S, k, k]: H[i, q, p]
    H = 0.5 * (H + np.swapaxes(H, 1, 2))
    var = np.ones((H.shape[0], len(names)))
    for i in range(H.shape[0]):
        try:
            c = np.linalg.inv(np.linalg.cholesky(H[i]))
            var[i] = np.minimum(np.sum(c * c, axis=0), 1.0)  # diag of H^-1 = diag(L^-T L^-1)
        except np.linalg.LinAlgError:
            pass  # not positive definite at the MAP: count the subject as uninformed
    chosen, subjects = [], {}
    if spec.correlated and all(
        float(np.mean(var[:, names.index(p)])) <= 0.5 for p in spec.correlated
    ):
        chosen += list(spec.correlated)
    for j, p in enumerate(names):
        rich = var[:, j] <= 0.5
        if p in spec.correlated or not rich.any():
            continue
        chosen.append(p)
        if not rich.all():
            subjects[p] = rich
    return tuple(chosen), subjects


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


def _choose_anchors(spec) -> dict[str, tuple[int, ...]]:
    r"""Parameters with between-study effects, and the studies whose data inform each.

    The data pin the value of each study :math:`s` with data on the endpoints a parameter acts
    on, :math:`a_s = T(\theta_{pop}) + \omega^{study} z_s`, and the population value only
    through the prior on the :math:`z_s`: :math:`T(\theta_{pop}) = \bar a - \omega^{study}
    \bar z`, as uncertain as few studies make it, a curved ridge in
    :math:`(T(\theta_{pop}), \log\omega^{study}, z)` whose tails NUTS diverged in (4 × 500
    fits of the bundled temsirolimus data: at pop_pd1_base −6 posterior SDs, PD-1 measured in
    one study; at pop_cl_sir +5 SD, 4 studies; at pop_vegf_base +6 SD, 2 studies). NUTS then
    samples :math:`\bar a = T(\theta_{pop}) + \omega^{study} \bar z` (means over those
    studies) in place of :math:`T(\theta_{pop})` (:func:`build_model`): a shift given the
    others, so the same posterior. Used where the population prior is normal on the
    transformed scale (:func:`_normal_on_transform`) and the parameter is not levelled.
    Returns ``{parameter: (study index, ...)}``.
    """
    if spec.n_studies < 2:
        return {}
    model, pri = spec.model, spec.priors
    study_of = np.asarray(spec.padded.data.study)[np.asarray(spec.obs_subject)]
    informs: dict[str, set] = {}
    for e_i, e in enumerate(spec.endpoints):
        studies = set(study_of[np.asarray(spec.obs_endpoint) == e_i].tolist())
        if not studies:
            continue
        acts = set(model.with_endpoints((e,)).parameters)
        for p in acts:
            informs.setdefault(p, set()).update(studies)
    out = {}
    for p in spec.estimated:
        pp = pri.parameters[p]
        where = informs.get(p, set())
        if (
            pp.bsv_study is not None
            and where
            and p not in spec.levels
            and _normal_on_transform(pp) is not None
        ):
            out[p] = tuple(sorted(int(i) for i in where))
    return out


def _level_frame(level, value):
    """``(h, k)`` of a levelled parameter (``ℓ = h·(k − log θ)``): its Hill exponent and
    log reference + log scale, from ``level = (hill, scale, log_ref)`` and ``value(name)``,
    a population value."""
    hill, scale, log_ref = level
    return value(hill), log_ref + (jnp.log(value(scale)) if scale else 0.0)


def _flat_index(u) -> dict[str, np.ndarray]:
    """Each site's positions in the flat vector of ``u`` (a dict of arrays, flattened by
    ``ravel_pytree`` in the order of its sorted keys), shaped like the site."""
    out, offset = {}, 0
    for name in sorted(u):
        shape = np.shape(u[name])
        n = int(np.prod(shape))
        out[name] = offset + np.arange(n).reshape(shape)
        offset += n
    return out


def _choose_levels(
    spec, objective: _Objective, flat_map, population: Sequence[str], pairs: dict | None = None
):
    r"""The IC50s to sample through their Hill-scaled level, and each one's reference.

    A Hill response depends on :math:`(C/\mathrm{IC50})^h`. Where the data sit mostly on one
    side of the IC50 (S6K inhibition near Imax on the bundled temsirolimus data) they pin the
    level :math:`\ell = h\,(\log C^* - \log \mathrm{IC50})` at the observed concentrations
    :math:`C^*`, not IC50 and :math:`h` apart: the posterior is a curved ridge
    :math:`\log \mathrm{IC50} = \log C^* - \ell/h`, which no linear metric straightens. NUTS
    then samples :math:`\ell = h\,(\log C_{ref} + \log s - \log \mathrm{IC50})` instead of
    :math:`\log \mathrm{IC50}` (population value and centred subject values; :math:`s` the
    model's scale of the concentration, e.g. temsirolimus's sirolimus ``potency``), an exact
    change of variables: the lognormal prior becomes a normal prior on :math:`\ell`
    (:func:`build_model`), the posterior is the same. The reference
    :math:`C_{ref}` makes :math:`\ell` uncorrelated with :math:`\log h` under the Laplace
    approximation at the (non-centred) MAP: with :math:`a = \log h`, :math:`\phi = \log
    \mathrm{IC50}`, :math:`\psi = \log s`,
    :math:`\log C_{ref} = \phi - \psi + (\Sigma_{\phi a} - \Sigma_{\psi a})/\Sigma_{aa}`.

    Pairs come from the model (``hill_levels = {ic50: (hill, scale)}``) unless ``pairs`` are
    given; a pair is used when
    the IC50 has a lognormal prior on the log scale (no multiplier, no correlation block) and
    the Hill exponent (and scale) are estimated on the log scale. Returns
    ``{ic50: (hill, scale or None, log C_ref)}``; empty when no pair qualifies or the
    curvature at the MAP is not usable.
    """
    pri = spec.priors
    est = set(spec.estimated)

    def log_scaled(q):
        pq = pri.parameters.get(q)
        return q in est and pq.transform == "log" and pq.multiplier == 1.0

    if pairs is None:
        pairs = dict(spec.model.hill_levels)
    usable = {}
    for p, (hill, scale) in pairs.items():
        if (
            log_scaled(p)
            and log_scaled(hill)
            and pri.parameters[p].prior.family == "lognormal"
            and p not in spec.correlated
        ):
            usable[p] = (hill, scale if scale is not None and log_scaled(scale) else None)
    if not usable:
        return {}
    laplace = _laplace_covariance(objective, flat_map, population, spec.n_subjects)
    if laplace is None:
        return {}
    _, pop_idx, sigma = laplace
    x = np.asarray(flat_map, dtype=float)
    where = {name: int(idx.flat[0]) for name, idx in _flat_index(objective.unravel(x)).items()}
    row = {int(g): j for j, g in enumerate(pop_idx)}
    out = {}
    for p, (hill, scale) in usable.items():
        a, f = row[where[f"pop_{hill}"]], row[where[f"pop_{p}"]]
        log_ref = x[where[f"pop_{p}"]] + sigma[f, a] / sigma[a, a]
        if scale is not None:
            s = row[where[f"pop_{scale}"]]
            log_ref -= x[where[f"pop_{scale}"]] + sigma[s, a] / sigma[a, a]
        if np.isfinite(log_ref):
            out[p] = (hill, scale, float(log_ref))
    return out


def _laplace_covariance(objective: _Objective, flat, population: Sequence[str], n_subjects: int):
    r"""The Laplace approximation's covariance at ``flat``: marginal variances of every
    unconstrained coordinate, and the population block, for NUTS's initial mass matrix.

    The Hessian of a hierarchical potential is an arrow: subjects are independent given the
    population-level values, so it has one small block :math:`B_i` per subject (its effects on
    every parameter), population columns :math:`C_i` coupling them to the population values,
    and the population block :math:`H_{PP}`. One Hessian-vector product (a central difference
    of the compiled gradient) per population coordinate gives :math:`H_{PP}` and every
    :math:`C_i`; one per column of the subject sites (along that column for all subjects at
    once) gives every :math:`B_i`. Then, by the Schur complement,
    :math:`\Sigma_{PP} = (H_{PP} - \sum_i C_i^T B_i^{-1} C_i)^{-1}` and each subject
    coordinate's variance is :math:`\mathrm{diag}(B_i^{-1}) +
    \mathrm{diag}(B_i^{-1} C_i \Sigma_{PP} C_i^T B_i^{-1})`: about 80 gradients on the
    365-subject temsirolimus fit instead of 3,346 for the full Hessian.

    The point need not be a mode (the centred chain start is the non-centred MAP): curvatures
    are symmetrised and their eigenvalues floored at 0.01 (an SD of at most 10 on the
    unconstrained scale). NUTS's default (the identity) spent about 550 leapfrog steps per
    iteration in the first 100 warmup iterations of the full temsirolimus fit, against 200
    from the conditional variances :math:`1/H_{jj}`.

    Returns ``(variances [N], population_index [m], population_covariance [m, m])`` in the
    order of the flat vector, or ``None`` where the gradient is not finite near the point.
    """
    x = np.asarray(flat, dtype=float)
    u = objective.unravel(jnp.asarray(x))

    def hvp(v):
        out = objective.hvp(x, v)
        if not np.all(np.isfinite(out)):
            raise FloatingPointError
        return out

    def floor_inv(a):
        w, q = np.linalg.eigh(0.5 * (a + np.swapaxes(a, -1, -2)))
        w = np.maximum(w, 1e-2)
        return (q / w[..., None, :]) @ np.swapaxes(q, -1, -2)

    pop_idx, subj_cols = [], []  # subj_cols: [S] flat indices of one column of a subject site
    for name, idx in _flat_index(u).items():
        if name in population:
            pop_idx.extend(idx.ravel().tolist())
        else:
            cols = idx.reshape(n_subjects, -1)
            subj_cols.extend(cols[:, c] for c in range(cols.shape[1]))
    pop_idx = np.asarray(pop_idx, dtype=int)
    S, k, m = n_subjects, len(subj_cols), len(pop_idx)
    cols = np.stack(subj_cols, axis=-1) if k else np.zeros((S, 0), dtype=int)  # [S, k]
    H_pp = np.zeros((m, m))
    C = np.zeros((S, k, m))
    B = np.zeros((S, k, k))
    try:
        for j, g in enumerate(pop_idx):
            v = np.zeros_like(x)
            v[g] = 1.0
            col = hvp(v)
            H_pp[:, j] = col[pop_idx]
            C[:, :, j] = col[cols]
        for c in range(k):
            v = np.zeros_like(x)
            v[cols[:, c]] = 1.0
            B[:, :, c] = hvp(v)[cols]
    except FloatingPointError:
        return None
    B_inv = floor_inv(B) if k else B
    BC = B_inv @ C  # [S, k, m]
    schur = H_pp - np.einsum("skm,skn->mn", C, BC)
    sigma_pp = floor_inv(schur)
    var = np.ones_like(x)
    var[pop_idx] = np.diag(sigma_pp)
    if k:
        extra = np.einsum("skm,mn,skn->sk", BC, sigma_pp, BC)
        var[cols] = np.diagonal(B_inv, axis1=1, axis2=2) + extra
    return var, pop_idx, sigma_pp


def _site_names(nm, obs, keep) -> list[str]:
    """Names of the model's sites for which ``keep(site)`` holds (traced abstractly: nothing
    is computed)."""
    from numpyro import handlers

    names: list[str] = []

    def run():
        tr = handlers.trace(handlers.seed(nm, 0)).get_trace(obs=obs)
        names.extend(k for k, v in tr.items() if keep(v))
        return 0

    jax.eval_shape(run)
    return names


def _population_sites(nm, obs) -> list[str]:
    """Latent sample sites outside the subject plate."""
    return _site_names(
        nm,
        obs,
        lambda v: (
            v["type"] == "sample"
            and not v["is_observed"]
            and not any(f.name == "subject" for f in v.get("cond_indep_stack", ()))
        ),
    )


def _deterministic_sites(nm, obs) -> list[str]:
    """Names of the model's deterministic sites."""
    return _site_names(nm, obs, lambda v: v["type"] == "deterministic")


def record_variables(columns) -> dict[str, str]:
    """``{column: constant_data variable}`` of a dataset's record columns: ``record_<safe
    name>`` (:func:`pkpd.inference.names.safe_names`), e.g. ``record_CRCL_ML_MIN`` for
    ``CRCL_ML/MIN``."""
    from pkpd.inference.names import safe_names

    return {c: f"record_{s}" for c, s in safe_names(str(c) for c in columns).items()}


def check_saveable(spec: FitSpec, attrs: dict | None = None) -> None:
    """Check, before sampling, that a fit of ``spec`` can be written to netCDF.

    Writes what the fit's file will hold apart from the draws (the data records, the
    attributes, a posterior with one draw of each covariate effect) to a temporary file the
    way :func:`save_fit` does, so that names or values netCDF cannot store stop the fit now
    instead of after sampling.

    Raises
    ------
    FitError
        Saying what could not be written.
    """
    import tempfile

    flat = {f"pop_{p}": np.zeros(1) for p in spec.estimated}
    flat.update({f"beta_{e.name}": np.zeros(1) for e in spec.effects if not e.prior.is_fixed})
    ll = np.zeros((1, len(spec.obs_y)))
    try:
        idata = _to_inference_data(spec, flat, ll, 1, {}, dict(attrs or {}))
        with tempfile.TemporaryDirectory(prefix="pkpd-save-check-") as tmp:
            idata.to_netcdf(str(Path(tmp) / "fit.nc"))
    except Exception as e:  # noqa: BLE001 - whatever netCDF refuses must stop the fit here
        raise FitError(
            f"the fit could not be saved to netCDF ({type(e).__name__}: {e}); nothing was sampled"
        ) from e


def _to_inference_data(spec: FitSpec, flat, ll, n_chains, extra, attrs):
    import arviz as az

    pri = spec.priors
    units = dict(spec.model.parameters)
    subj = list(spec.padded.subject_ids)
    studies = list(spec.padded.studies)
    post, dims = {}, {}
    for name, v in flat.items():
        if name.startswith(("z_", "zc_")):
            continue  # standard-normal latents: the eta_* deterministics carry them
        if name.endswith(("_fraction", "_level", "_anchor")) and name.startswith("pop_"):
            continue  # sampled forms of pop_<param>, which is kept
        arr = np.asarray(v)
        arr = arr.reshape((n_chains, -1) + arr.shape[1:])
        post[name] = arr
        if name.startswith(("eta_study_",)):
            dims[name] = ["study"]
        elif name.startswith(("eta_", "theta_")):
            dims[name] = ["subject"]
        elif name == "corr_cholesky":
            dims[name] = ["corr_row", "corr_col"]
    ll = ll.reshape((n_chains, -1, ll.shape[-1]))
    ep_names = np.array(spec.endpoints, dtype=object)[spec.obs_endpoint]
    d = spec.padded.data
    coords = {
        "subject": subj,
        "study": studies,
        "obs": np.arange(len(spec.obs_y)),
        "covariate": list(spec.padded.covariates),
        "dose": np.arange(d.dose_time.shape[1]),
    }
    if spec.correlated:
        coords["corr_row"] = spec.correlated
        coords["corr_col"] = spec.correlated
    obs_y = np.where(spec.obs_blq & np.isnan(spec.obs_y), np.nan, spec.obs_y)
    constant = {
        "obs_time": spec.obs_time,
        "obs_subject": np.array(subj, dtype=object)[spec.obs_subject].astype(str),
        "obs_endpoint": ep_names.astype(str),
        "obs_lloq": spec.obs_lloq,
        "obs_blq": spec.obs_blq.astype(np.int8),
        "obs_line": spec.obs_line,
        "subject_study": np.array(studies, dtype=object)[np.asarray(d.study)].astype(str),
        "covariates": np.asarray(d.cov),
        "dose_time": np.asarray(d.dose_time),
        "dose_amt": np.asarray(d.dose_amt),
        "dose_rate": np.asarray(d.dose_rate),
        "dose_dur": np.asarray(d.dose_dur),
        "dose_mask": np.asarray(d.dose_mask).astype(np.int8),
    }
    cdims = {k: ["obs"] for k in constant if k.startswith("obs_")}
    # the checked data records, so a fit file alone can be diagnosed and simulated from; each
    # column under its netCDF-safe name (pkpd.inference.names), the original in the
    # variable's original_name attribute and in attrs["data_columns"]
    rec = spec.dataset.records
    safe = record_variables(rec.columns)
    for col in rec.columns:
        v = rec[col].to_numpy()
        if v.dtype == bool:
            v = v.astype(np.int8)
        elif v.dtype.kind not in "fiu":
            v = v.astype(str).astype(object)
        constant[safe[col]] = v
        cdims[safe[col]] = ["record"]
    coords["record"] = np.arange(len(rec))
    cdims.update(
        subject_study=["subject"],
        covariates=["subject", "covariate"],
        dose_time=["subject", "dose"],
        dose_amt=["subject", "dose"],
        dose_rate=["subject", "dose"],
        dose_dur=["subject", "dose"],
        dose_mask=["subject", "dose"],
    )
    import pkpd

    all_attrs = {
        FIT_MARKER: 1,
        "pkpd_version": pkpd.__version__,
        "model": spec.model.name,
        "endpoints": json.dumps(spec.endpoints),
        "endpoints_not_fitted": json.dumps(
            [e for e in spec.dataset.endpoints if e not in spec.endpoints]
        ),
        "estimated": json.dumps(spec.estimated),
        "fixed": json.dumps(spec.fixed),
        "data_columns": json.dumps([[str(c), safe[c]] for c in rec.columns], ensure_ascii=False),
        "covariate_effects": json.dumps([e.name for e in spec.effects]),
        "covariate_effects_detail": json.dumps([describe_effect(e) for e in spec.effects]),
        "covariates_requested": json.dumps(spec.requested_covariates),
        "model_options": json.dumps(model_options(spec.model)),
        "priors_json": json.dumps(pri.raw),
        "dropped_covariate_effects": json.dumps(spec.dropped_effects),
        "priors_source": str(pri.source),
        "priors_toml": pri.text,
        "data_source": str(spec.dataset.source),
        "data_sha256": _data_sha256(spec.dataset),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **{k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in attrs.items()},
    }
    idata = az.from_dict(
        posterior=post,
        sample_stats={k: v for k, v in extra.items()} or None,
        log_likelihood={"y": ll},
        observed_data={"y": obs_y},
        constant_data=constant,
        coords=coords,
        dims={**dims, "y": ["obs"], **cdims},
        attrs=all_attrs,
    )
    for name in idata.posterior.data_vars:
        for prefix in ("pop_", "theta_"):
            if name.startswith(prefix) and name[len(prefix) :] in units:
                idata.posterior[name].attrs["units"] = units[name[len(prefix) :]]
    for col in rec.columns:
        idata.constant_data[safe[col]].attrs[ORIGINAL_NAME] = str(col)
    for e in spec.effects:
        if f"beta_{e.name}" in idata.posterior:
            idata.posterior[f"beta_{e.name}"].attrs.update(
                parameter=e.parameter,
                covariate=str(e.covariate),
                form=e.form,
                long_name=f"{e.form} effect of covariate {e.covariate} on {e.parameter}",
            )
    idata.observed_data["y"].attrs["units"] = json.dumps(
        {e: model_endpoints(spec.model).get(e, "") for e in spec.endpoints}
    )
    idata.constant_data["obs_time"].attrs["units"] = "h"
    idata.constant_data["dose_time"].attrs["units"] = "h"
    idata.constant_data["dose_amt"].attrs["units"] = "mg"
    return idata


# ---------------------------------------------------------------------------------------------
# Save / load


def save_fit(idata, path) -> Path:
    """Write a fit to netCDF atomically (a temporary file renamed into place)."""
    from pkpd._files import atomic_write

    return atomic_write(path, idata.to_netcdf)


def load_fit(path):
    """Read a fit written by :func:`save_fit`; a clear error for anything else."""
    import arviz as az

    from pkpd._files import read_marked

    return read_marked(
        path,
        az.from_netcdf,
        marker=FIT_MARKER,
        what="fit",
        writer="`pkpd fit` or pkpd.save_fit",
        error=FitError,
    )
