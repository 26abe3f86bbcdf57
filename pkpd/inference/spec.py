"""Setting up a fit: the model, data and priors checked and laid out as a :class:`FitSpec`
(everything a fit needs, as static arrays)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pkpd.data.arrays import PaddedData
from pkpd.data.dataset import Dataset
from pkpd.inference.priors import CovariateEffect, Priors, load_priors


class FitError(ValueError):
    """A fit that cannot be set up (data, model and priors disagree); the message says how."""


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
    #: Parameters with inter-occasion variability (an ``iov`` prior): one effect per subject
    #: and occasion, ``kappa_<p>`` [subject, occasion].
    iov: list[str] = field(default_factory=list)
    #: Parameters whose inter-occasion variability the model's default priors give but the
    #: data cannot carry (no occasions): dropped from the priors, listed in the fit's attributes.
    dropped_iov: list[str] = field(default_factory=list)
    #: Parameters whose occasion effects are correlated within an occasion (the priors'
    #: ``[correlation_iov]``): ``κ_ik = diag(ω_iov) L z_ik``, ``L`` = ``corr_iov_cholesky``.
    iov_correlated: list[str] = field(default_factory=list)
    #: Published arm-level summaries in the fit (:class:`pkpd.inference.aggregate.AggregateSetup`).
    aggregate: Any = None
    #: Studies that only the aggregate data have (after the individual data's studies).
    aggregate_studies: list[str] = field(default_factory=list)

    def centered_mask(self, p: str) -> np.ndarray:
        """Which subjects' effects on ``p`` are sampled centred (bool array [subjects])."""
        if p in self.centered_subjects:
            return np.asarray(self.centered_subjects[p], dtype=bool)
        return np.full(self.n_subjects, p in self.centered)

    @property
    def n_subjects(self) -> int:
        return self.padded.n_subjects

    @property
    def study_names(self) -> list[str]:
        """The fit's studies: those of the individual data, then those only the aggregate data
        have (each with its own between-study effects)."""
        return [str(s) for s in self.padded.studies] + list(self.aggregate_studies)

    @property
    def n_studies(self) -> int:
        return len(self.study_names)

    @property
    def n_occasions(self) -> int:
        """Occasions of the subject with the most (1 when the data have none)."""
        d = self.padded.data
        return int(np.shape(d.occ_start)[1]) if d.has_occasions else 1


def prepare(
    model,
    data,
    priors=None,
    *,
    covariates: Sequence[str] | None = None,
    endpoints: Sequence[str] | None = None,
    aggregate=None,
    aggregate_virtual: int | None = None,
    aggregate_seed: int | None = None,
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
    aggregate : AggregateData, path or DataFrame, optional
        Published arm-level summaries fitted with the data (:mod:`pkpd.data.aggregate`,
        :mod:`pkpd.inference.aggregate`); ``aggregate_virtual`` virtual subjects per arm
        (default :func:`pkpd.inference.aggregate.default_virtual`), their fixed normals from
        ``aggregate_seed``.
    """
    from pkpd.data import read_dataset

    model = resolve_model(model)
    if data is None:
        if aggregate is None:
            raise FitError("no data: give a dataset, or aggregate data (aggregate=) or both")
        ds = _no_individual_data()
    else:
        # a path or DataFrame is read with the model's DVID codes and endpoint units
        ds = data if isinstance(data, Dataset) else read_dataset(data, model=model)
    eps_model = model_endpoints(model)
    summarised = set()
    if aggregate is not None:
        from pkpd.data.aggregate import as_aggregate

        aggregate = as_aggregate(aggregate, model)  # checked now: every problem before any work
        summarised = {e for r in aggregate.rows for e in r.endpoints}
        if endpoints is not None and not summarised <= set(endpoints):
            raise FitError(
                f"the aggregate data summarise endpoint(s) "
                f"{', '.join(sorted(summarised - set(endpoints)))}, which endpoints= leaves out; "
                "add them to endpoints= or remove those summaries"
            )
    if data is None:
        # a fit of published summaries alone: the endpoints they summarise
        named = summarised | set(endpoints or ())
        endpoints = [e for e in eps_model if e in named]
    if endpoints is not None and data is not None:
        bad = [e for e in endpoints if e not in ds.endpoints or e not in eps_model]
        if bad:
            raise FitError(
                f"endpoints {', '.join(bad)} cannot be fitted: the data have {', '.join(ds.endpoints)} "
                f"and model {model.name!r} predicts {', '.join(eps_model)}"
            )
    present = [e for e in ds.endpoints if e in eps_model and (endpoints is None or e in endpoints)]
    if data is None:
        present = list(endpoints)
    elif summarised - set(present):
        # an endpoint only the summaries inform (e.g. published sirolimus exposure beside
        # individual temsirolimus concentrations): fitted too, with no individual observations
        present = [e for e in eps_model if e in set(present) | summarised]
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
    bundled = priors is None  # the model's default priors, not the user's
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
    dropped_iov = []
    if bundled and not padded.data.has_occasions:
        # the default priors' inter-occasion variability applies where the data have
        # occasions; without them it is dropped and listed (as a covariate without its column)
        dropped_iov = [p for p, pp in priors.parameters.items() if pp.iov is not None]
        priors = priors.without_iov(dropped_iov)
    iov = iov_parameters(model, priors, padded, ds, estimated)

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
    corr_iov = list(priors.correlation_iov.get("parameters", [])) if priors.correlation_iov else []
    iov_correlated = [p for p in corr_iov if p in iov]
    if len(iov_correlated) < 2:
        iov_correlated = []
    spec = FitSpec(
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
        iov=iov,
        dropped_iov=dropped_iov,
        iov_correlated=iov_correlated,
    )
    if aggregate is not None:
        _add_aggregate(spec, aggregate, aggregate_virtual, aggregate_seed)
    return spec


def _no_individual_data() -> Dataset:
    """An empty dataset (no subjects): a fit of published summaries alone."""
    import pandas as pd

    from pkpd.data import read_dataset

    one = read_dataset(
        pd.DataFrame(
            [dict(ID=1, TIME=0.0, EVID=1, AMT=1.0, DV="."), dict(ID=1, TIME=1.0, EVID=0, DV=1.0)]
        )
    )
    return dataclasses.replace(one, records=one.records.iloc[:0], source="(no individual data)")


def _add_aggregate(spec: FitSpec, agg, n_virtual, seed) -> None:
    """Lay out the aggregate data, already checked against the model (``prepare``), for the
    fit (``spec.aggregate``)."""
    from pkpd.inference import aggregate as agg_mod

    known = set(spec.study_names)
    spec.aggregate_studies = [s for s in agg.studies if s not in known]
    spec.aggregate = agg_mod.setup(
        spec,
        agg,
        n_virtual=n_virtual,
        seed=agg_mod.DEFAULT_SEED if seed is None else int(seed),
    )


def iov_parameters(model, priors, padded, ds, estimated) -> list[str]:
    """The parameters with inter-occasion variability, checked against the data and model
    (``FitError`` listing every problem)."""
    with_iov = [p for p, pp in priors.parameters.items() if pp.iov is not None]
    if not with_iov:
        return []
    problems = []
    fixed = [p for p in with_iov if p not in estimated]
    if fixed:
        problems.append(
            f"iov prior on parameter(s) {', '.join(fixed)} that the fit does not estimate (a "
            "fixed prior or not a parameter of the model); remove their iov entries"
        )
    d = padded.data
    if not d.has_occasions:
        problems.append(
            f"the priors give inter-occasion variability (iov) on {', '.join(with_iov)}, but the "
            "data have no occasions: add an OCC column, or derive occasions from the doses "
            "(pkpd.read_dataset(..., occasions='dose' or 'every 1 w'); CLI --occasions)"
        )
    unsupported = [p for p in with_iov if p in estimated and p not in model.occasion_parameters]
    if unsupported:
        can = ", ".join(model.occasion_parameters) or "none"
        problems.append(
            f"model {model.name!r} cannot change parameter(s) {', '.join(unsupported)} between "
            f"occasions (parameters it can: {can}); remove their iov entries"
        )
    if d.has_occasions:
        lines = ds.records["LINE"].to_numpy()
        problems += model.occasion_problems(d, lambda row: int(lines[row]))
    if problems:
        raise FitError("; ".join(problems))
    return [p for p in estimated if priors.parameters[p].iov is not None]


def model_options(model) -> dict:
    """The constructor options of a model that differ from its registry entry (JSON-ready)."""

    if not dataclasses.is_dataclass(model):
        return {}
    from pkpd.models import MODELS

    base = MODELS.get(model.name)
    if base is None and getattr(model, "definition", None) is not None:
        from pkpd.models.blocks import from_definition

        base = from_definition(model.definition)  # the attrs store the definition itself
    out = {}
    for f in dataclasses.fields(model):
        if not f.compare:  # caches (a built engine), not options
            continue
        v = getattr(model, f.name)
        if base is None or getattr(base, f.name, None) != v:
            v = list(v) if isinstance(v, tuple) else v
            if base is None and not _json_ready(v):
                # an unregistered model's equations (functions) cannot be stored; reading the
                # fit back needs the model registered (pkpd.models.register) or in a file
                continue
            out[f.name] = v
    return out


def _json_ready(value) -> bool:
    import json

    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
