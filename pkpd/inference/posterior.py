"""Everything a saved fit needs to be used again: its data, model, priors and posterior draws.

A fit file (:func:`pkpd.save_fit`) carries the checked data records (``constant_data``
``record_*``, under netCDF-safe names with the column names in attributes: :func:`data_columns`),
the model name and options, the priors as parsed, and the covariate effects
chosen. :func:`restore_spec` rebuilds the :class:`~pkpd.inference.fit.FitSpec` of the fit from
the file alone, so diagnostics and simulations need nothing but the file.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd

from pkpd.data.dataset import Dataset
from pkpd.inference.fit import FitError, FitSpec, prepare
from pkpd.inference.names import ORIGINAL_NAME
from pkpd.inference.priors import Priors, load_priors


def _attr(idata, key, default=None):
    v = idata.attrs.get(key, default)
    if v is None:
        raise FitError(
            f"the fit has no '{key}' attribute; it was written by an older pkpd (refit it)"
        )
    return v


def data_columns(idata) -> dict[str, str]:
    """``{constant_data variable: original column name}`` of the fit's data records.

    Columns are stored under netCDF-safe names (``record_CRCL_ML_MIN`` for the column
    ``CRCL_ML/MIN``; :mod:`pkpd.inference.names`), the original in each variable's
    ``original_name`` attribute. Fits written before that have ``record_<column>``.
    """
    cd = idata.constant_data
    out = {}
    for k in cd.data_vars:
        if k.startswith("record_"):
            out[k] = str(cd[k].attrs.get(ORIGINAL_NAME, k[len("record_") :]))
    return out


def restore_dataset(idata) -> Dataset:
    """The checked dataset the fit was run on (from ``constant_data.record_*``), its columns
    under their original names (:func:`data_columns`)."""
    cd = idata.constant_data
    names = data_columns(idata)
    if not names:
        raise FitError(
            "the fit carries no data records; it was written by an older pkpd (refit it)"
        )
    rec = pd.DataFrame({col: cd[k].values for k, col in names.items()})
    for col in ("ID", "STUDY", "AMT_UNIT", "ENDPOINT"):
        if col in rec:
            rec[col] = rec[col].astype(str)
    if "BLQ" in rec:
        rec["BLQ"] = rec["BLQ"].astype(bool)
    canonical = list(rec.columns[: list(rec.columns).index("ENDPOINT") + 1])
    covs = tuple(c for c in rec.columns if c not in canonical)
    return Dataset(records=rec, covariates=covs, source=str(idata.attrs.get("data_source", "")))


def restore_model(idata):
    """The model object of the fit (registry model with the options it was fitted with)."""
    from pkpd.models import MODELS

    name = _attr(idata, "model")
    if name not in MODELS and idata.attrs.get("model_source"):
        from pkpd.models.files import restore_model_source

        restore_model_source(
            name,
            str(idata.attrs.get("model_source_path", "")),
            str(idata.attrs["model_source"]),
            str(idata.attrs.get("model_source_sha256", "")),
        )
    if name not in MODELS and idata.attrs.get("model_definition"):
        from pkpd.models import register
        from pkpd.models.blocks import from_definition

        register(from_definition(json.loads(str(idata.attrs["model_definition"]))))
    if name not in MODELS:
        raise FitError(
            f"the fit's model {name!r} is not a registered pkpd model; pass the model object, "
            "or register it (pkpd.models.register, or load its file with "
            "pkpd.models.load_model('mydrug.py'))"
        )
    opts = json.loads(_attr(idata, "model_options", "{}"))
    base = MODELS[name]
    if not opts:
        return base
    return dataclasses.replace(
        base, **{k: tuple(v) if isinstance(v, list) else v for k, v in opts.items()}
    )


def restore_priors(idata, model=None) -> Priors:
    """The priors the fit used, as parsed when it ran."""
    raw = json.loads(_attr(idata, "priors_json"))
    pri = load_priors(raw, model=model if model is not None else restore_model(idata))
    return dataclasses.replace(
        pri, source=idata.attrs.get("priors_source"), text=idata.attrs.get("priors_toml", "")
    )


def restore_spec(idata, model=None) -> FitSpec:
    """The :class:`~pkpd.inference.fit.FitSpec` of a fit, rebuilt from the file alone."""
    model = model if model is not None else restore_model(idata)
    ds = restore_dataset(idata)
    priors = restore_priors(idata, model)
    requested = json.loads(idata.attrs.get("covariates_requested", "null"))
    endpoints = json.loads(_attr(idata, "endpoints"))
    aggregate = None
    if idata.attrs.get("aggregate_csv"):
        import io

        from pkpd.data.aggregate import read_aggregate

        text = io.StringIO(str(idata.attrs["aggregate_csv"]))
        text.name = str(idata.attrs.get("aggregate_source", "aggregate data of the fit"))
        aggregate = read_aggregate(text)
    spec = prepare(
        model,
        ds if len(ds.records) or aggregate is None else None,  # None: summaries alone
        priors,
        covariates=requested,
        endpoints=endpoints,
        aggregate=aggregate,
        aggregate_virtual=int(idata.attrs.get("aggregate_virtual", 0)) or None,
        aggregate_seed=idata.attrs.get("aggregate_seed"),
    )
    fitted = json.loads(idata.attrs.get("covariate_effects", "[]"))
    if [e.name for e in spec.effects] != fitted:
        raise FitError(
            f"the fit's covariate effects {fitted} cannot be rebuilt (got "
            f"{[e.name for e in spec.effects]})"
        )
    return spec


def thin_indices(total: int, n: int) -> np.ndarray:
    """``n`` indices evenly spaced over ``total`` draws (chains flattened), first and last
    included, without repeats."""
    return np.unique(np.round(np.linspace(0, total - 1, n)).astype(int))


def draws(idata, names=None) -> dict[str, np.ndarray]:
    """Posterior draws, chains flattened: ``{name: [n_draws, ...]}``."""
    post = idata.posterior
    names = list(post.data_vars) if names is None else names
    out = {}
    for k in names:
        v = post[k].values
        out[k] = v.reshape((-1,) + v.shape[2:])
    return out
