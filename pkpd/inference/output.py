"""A fit as :class:`arviz.InferenceData`: which sites are stored, the attributes, the
check that everything but the draws can be saved, and netCDF save/load."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from pathlib import Path

import jax
import jax.flatten_util
import numpy as np

from pkpd.data.dataset import Dataset
from pkpd.inference.covariates import describe as describe_effect
from pkpd.inference.names import ORIGINAL_NAME
from pkpd.inference.spec import FitError, FitSpec, model_endpoints, model_options

FIT_MARKER = "pkpd_fit"


def _data_sha256(ds: Dataset) -> str:
    if ds.source and Path(ds.source).exists():
        return hashlib.sha256(Path(ds.source).read_bytes()).hexdigest()
    return hashlib.sha256(ds.records.to_csv(index=False).encode()).hexdigest()


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


def _model_source_attrs(model) -> dict:
    """The source of a model loaded from a file (:mod:`pkpd.models.files`) and the definition of
    a model built from blocks (:attr:`pkpd.models.BlockModel.definition`), so the fit file alone
    can rebuild it; empty for bundled and other in-process models."""
    from pkpd.models.files import SOURCES

    out = {}
    definition = getattr(model, "definition", None)
    if definition is not None:  # a model built from blocks: its blocks as plain values
        out["model_definition"] = json.dumps(definition)
    if model.name in SOURCES:
        path, text, sha = SOURCES[model.name]
        out.update(model_source_path=path, model_source=text, model_source_sha256=sha)
    return out


def _aggregate_attrs(spec: FitSpec) -> dict:
    """The aggregate data of the fit, so that the file alone rebuilds the fit's spec: the CSV
    text as read, the virtual subjects and seed, and the rows as fitted (with their Monte Carlo
    ratio; :func:`pkpd.inference.aggregate.rows_attr`)."""
    agg = spec.aggregate
    if agg is None:
        return {}
    from pkpd.inference.aggregate import rows_attr

    return {
        "aggregate_csv": agg.data.text,
        "aggregate_source": agg.data.source,
        "aggregate_sha256": agg.data.sha256,
        "aggregate_virtual": int(agg.n_virtual),
        "aggregate_seed": int(agg.seed),
        "aggregate_studies": json.dumps(spec.aggregate_studies),
        "aggregate_rows": json.dumps(rows_attr(agg)),
    }


def _occasion_labels(spec: FitSpec) -> np.ndarray:
    """:attr:`pkpd.data.arrays.PaddedData.occasion_labels` as ``[subject, occasion]`` (``""``
    past a subject's last occasion)."""
    out = np.full((spec.n_subjects, spec.n_occasions), "", dtype=object)
    for i, labels in enumerate(spec.padded.occasion_labels):
        out[i, : len(labels)] = labels
    return out


def _to_inference_data(spec: FitSpec, flat, ll, n_chains, extra, attrs):
    import arviz as az

    pri = spec.priors
    units = dict(spec.model.parameters)
    subj = list(spec.padded.subject_ids)
    studies = spec.study_names
    post, dims = {}, {}
    for name, v in flat.items():
        if name.startswith(("z_", "zc_")):
            continue  # standard-normal latents: the eta_* deterministics carry them
        if name.endswith(("_fraction", "_level", "_anchor")) and name.startswith("pop_"):
            continue  # sampled forms of pop_<param>, which is kept
        arr = np.asarray(v)
        arr = arr.reshape((n_chains, arr.shape[0] // n_chains) + arr.shape[1:])
        post[name] = arr
        if name.startswith(("eta_study_",)):
            dims[name] = ["study"]
        elif name.startswith("kappa_") or (
            name.startswith("theta_") and name[len("theta_") :] in spec.iov
        ):
            dims[name] = ["subject", "occasion"]
        elif name.startswith(("eta_", "theta_")):
            dims[name] = ["subject"]
        elif name.startswith("aggregate_"):
            dims[name] = ["aggregate_row"]
        elif name == "corr_cholesky":
            dims[name] = ["corr_row", "corr_col"]
        elif name == "corr_iov_cholesky":
            dims[name] = ["corr_iov_row", "corr_iov_col"]
    ll = ll.reshape((n_chains, ll.shape[0] // n_chains, ll.shape[-1]))  # [obs] may be empty
    ep_names = np.array(spec.endpoints, dtype=object)[spec.obs_endpoint]
    d = spec.padded.data
    coords = {
        "subject": subj,
        "study": studies,
        "obs": np.arange(len(spec.obs_y)),
        "covariate": list(spec.padded.covariates),
        "dose": np.arange(d.dose_time.shape[1]),
    }
    if spec.aggregate is not None:
        coords["aggregate_row"] = spec.aggregate.labels
    if spec.iov:
        # the k-th occasion of each subject in time order (labels: constant_data occasion_label)
        coords["occasion"] = np.arange(1, spec.n_occasions + 1)
    if spec.correlated:
        coords["corr_row"] = spec.correlated
        coords["corr_col"] = spec.correlated
    if spec.iov_correlated:
        coords["corr_iov_row"] = spec.iov_correlated
        coords["corr_iov_col"] = spec.iov_correlated
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
    if spec.iov:
        constant["occasion_start"] = np.asarray(d.occ_start)
        constant["occasion_valid"] = np.asarray(d.occ_valid).astype(np.int8)
        constant["occasion_label"] = _occasion_labels(spec)
        cdims.update(
            occasion_start=["subject", "occasion"],
            occasion_valid=["subject", "occasion"],
            occasion_label=["subject", "occasion"],
        )
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
        "iov": json.dumps(spec.iov),
        "data_columns": json.dumps([[str(c), safe[c]] for c in rec.columns], ensure_ascii=False),
        "covariate_effects": json.dumps([e.name for e in spec.effects]),
        "covariate_effects_detail": json.dumps([describe_effect(e) for e in spec.effects]),
        "covariates_requested": json.dumps(spec.requested_covariates),
        "model_options": json.dumps(model_options(spec.model)),
        **_model_source_attrs(spec.model),
        "priors_json": json.dumps(pri.raw),
        "dropped_covariate_effects": json.dumps(spec.dropped_effects),
        "dropped_iov": json.dumps(spec.dropped_iov),
        "priors_source": str(pri.source),
        "priors_toml": pri.text,
        "data_source": str(spec.dataset.source),
        "data_sha256": _data_sha256(spec.dataset),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **_aggregate_attrs(spec),
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
