r"""Parameter, convergence and data tables of a fit (pandas DataFrames).

Between-subject variability of a log-normally distributed parameter is reported as the exact
coefficient of variation :math:`\mathrm{CV} = 100\sqrt{e^{\omega^2} - 1}\,\%`; shrinkage of the
subject effects as :math:`1 - \mathrm{SD}_i(\mathrm{E}[\eta_i \mid y]) / \omega` (Savic &
Karlsson 2009, AAPS J 11:558), with :math:`\omega` the posterior median.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import xarray as xr

from pkpd.diagnostics._common import as_fit
from pkpd.inference.summary import ESS_MIN, RHAT_MAX  # the thresholds `pkpd fit` uses

_KIND_ORDER = (
    "typical value",
    "covariate effect",
    "between-subject SD",
    "between-occasion SD",
    "between-study SD",
)
#: Kinds of SD whose CV a log-normal parameter's row shows, and the prefix of their variables.
_SD_PREFIX = {
    "between-subject SD": "omega_",
    "between-occasion SD": "omega_iov_",
    "between-study SD": "omega_study_",
}


def _kind(name: str) -> str:
    if name.startswith("pop_"):
        return "typical value"
    if name.startswith("omega_study_"):
        return "between-study SD"
    if name.startswith("omega_iov_"):
        return "between-occasion SD"
    if name.startswith("omega_"):
        return "between-subject SD"
    if name.startswith("beta_"):
        return "covariate effect"
    if name.startswith("sigma_"):
        return "residual error"
    return "other"


def population_variables(idata) -> list[str]:
    """Population-level posterior variables (no subject or study dimension), in table order."""
    post = idata.posterior
    names = [
        v
        for v in post.data_vars
        if v.startswith(("pop_", "omega_", "beta_", "sigma_")) and post[v].ndim == 2
    ]
    order = {k: i for i, k in enumerate(_KIND_ORDER + ("residual error",))}
    return sorted(names, key=lambda v: (order.get(_kind(v), 99), names.index(v)))


def _ess(x, method: str) -> float:
    import arviz as az

    try:
        with warnings.catch_warnings():  # constant draws: 0/0 inside ArviZ, NaN is the answer
            warnings.simplefilter("ignore", RuntimeWarning)
            out = az.ess(x.to_dataset(name="v"), method=method)["v"]
        return float(out.values)
    except Exception:  # noqa: BLE001 - too few draws for ArviZ: no estimate
        return np.nan


def _rhat(x) -> float:
    import arviz as az

    if x.sizes["chain"] < 2:
        return np.nan
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(az.rhat(x.to_dataset(name="v"))["v"].values)
    except Exception:  # noqa: BLE001
        return np.nan


def _priors_raw(idata) -> dict:
    """The priors a fit stored (``attrs["priors_json"]``, parsed), or ``{}``."""
    try:
        return json.loads(idata.attrs.get("priors_json", "{}"))
    except ValueError:
        return {}


def _transform_of(idata) -> dict[str, str]:
    raw = _priors_raw(idata)
    out = {}
    for p, entry in (raw.get("parameters") or {}).items():
        if isinstance(entry, dict):
            out[p] = entry.get("transform", "log")
    return out


def _prior_text(idata) -> dict[str, str]:
    """Variable name → prior as written in the priors (e.g. ``lognormal(median=16, sd_log=0.25)``)."""
    raw = _priors_raw(idata)

    def fmt(d):
        if not isinstance(d, dict):
            return str(d)
        fam = d.get("family", "?")
        args = ", ".join(f"{k}={v:g}" if isinstance(v, float | int) else f"{k}={v}"
                         for k, v in d.items() if k != "family")  # fmt: skip
        return f"{fam}({args})"

    out = {}
    for p, e in (raw.get("parameters") or {}).items():
        if not isinstance(e, dict):
            continue
        if "prior" in e:
            out[f"pop_{p}"] = fmt(e["prior"])
        if e.get("bsv"):
            out[f"omega_{p}"] = fmt(e["bsv"])
        if e.get("bsv_study"):
            out[f"omega_study_{p}"] = fmt(e["bsv_study"])
        if e.get("iov"):
            out[f"omega_iov_{p}"] = fmt(e["iov"])
    for name, e in (raw.get("covariates") or {}).items():
        if isinstance(e, dict) and "prior" in e:
            out[f"beta_{name}"] = fmt(e["prior"])
    sites = {"additive": "add", "proportional": "prop", "sd_log": "log", "sd_logit": "logit"}
    for ep, e in (raw.get("residual") or {}).items():
        if not isinstance(e, dict):
            continue
        for term, short in sites.items():
            if term in e:
                out[f"sigma_{short}_{ep}"] = fmt(e[term])
    return out


def shrinkage(fit) -> pd.Series:
    r"""Shrinkage (%) of each parameter's subject effects, ``100 (1 − SD(E[η_i|y]) / ω)``, and
    of its occasion effects (index ``iov_<p>``), ``100 (1 − SD(E[κ_ik|y]) / ω_iov)`` over the
    subjects' real occasions.

    ``E[η_i|y]`` is the posterior mean of subject ``i``'s effect and ``ω`` the posterior median
    of the between-subject SD. Near 0: the data pin down each subject; above ~30%: individual
    estimates are pulled to the population and plots against them (e.g. η vs covariates)
    mislead.
    """
    idata = as_fit(fit)
    post = idata.posterior
    out = {}
    for v in post.data_vars:
        if not v.startswith("eta_") or v.startswith("eta_study_") or "subject" not in post[v].dims:
            continue
        p = v[len("eta_") :]
        if f"omega_{p}" not in post:
            continue
        mean_eta = post[v].mean(("chain", "draw")).values
        om = float(post[f"omega_{p}"].median().values)
        out[p] = 100.0 * (1.0 - float(np.std(mean_eta, ddof=1)) / om) if om > 0 else np.nan
    for v in post.data_vars:
        if not v.startswith("kappa_") or f"omega_iov_{v[len('kappa_') :]}" not in post:
            continue
        p = v[len("kappa_") :]
        mean_k = post[v].mean(("chain", "draw")).values
        valid = np.asarray(idata.constant_data["occasion_valid"].values, dtype=bool)
        om = float(post[f"omega_iov_{p}"].median().values)
        sd = float(np.std(mean_k[valid], ddof=1))
        out[f"iov_{p}"] = 100.0 * (1.0 - sd / om) if om > 0 else np.nan
    return pd.Series(out, name="shrinkage_percent", dtype=float)


#: Cholesky factor variable, its row dimension, the table's kind and name prefix, the priors'
#: section: subject effects (``[correlation]``) and occasion effects (``[correlation_iov]``).
_CORRELATIONS = (
    ("corr_cholesky", "corr_row", "between-subject correlation", "corr_", "correlation"),
    ("corr_iov_cholesky", "corr_iov_row", "between-occasion correlation", "corr_iov_",
     "correlation_iov"),
)  # fmt: skip


def correlations(fit) -> dict:
    """Each estimated correlation of a fit's random effects, ``{name: DataArray [chain,
    draw]}``: ``corr_<a>_<b>`` between the subject effects of ``a`` and ``b`` (priors
    ``[correlation]``), ``corr_iov_<a>_<b>`` between their occasion effects within an occasion
    (``[correlation_iov]``); the correlation matrix is :math:`L L^T` of the fitted Cholesky
    factor. Attributes ``kind`` and ``prior`` (the LKJ prior)."""
    idata = as_fit(fit)
    post = idata.posterior
    raw = _priors_raw(idata)
    out = {}
    for var, row_dim, kind, prefix, section in _CORRELATIONS:
        if var not in post:
            continue
        L = np.asarray(post[var].values, dtype=float)  # [chain, draw, k, k]
        R = L @ np.swapaxes(L, -1, -2)
        names = [str(n) for n in post[var][row_dim].values]
        eta = (raw.get(section) or {}).get("lkj_eta", 2.0)
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                x = xr.DataArray(
                    R[..., i, j],
                    dims=("chain", "draw"),
                    coords={d: post[d] for d in ("chain", "draw")},
                    attrs={"kind": kind, "prior": f"lkj(eta={eta:g})"},
                )
                out[f"{prefix}{names[i]}_{names[j]}"] = x
    return out


def cv_percent(omega) -> np.ndarray:
    r"""Between-subject CV (%) of a log-normal parameter from its SD ``ω`` on the log scale."""
    om = np.asarray(omega, dtype=float)
    return 100.0 * np.sqrt(np.expm1(om**2))


def parameter_table(fit, *, prob: float = 0.90) -> pd.DataFrame:
    """Every population-level quantity of a fit, with its fixed parameters.

    Parameters
    ----------
    fit : arviz.InferenceData or path
    prob : float
        Mass of the central credible interval.

    Returns
    -------
    pandas.DataFrame
        Indexed by variable name (``pop_cl``, ``omega_cl``, ``beta_cl_bsa``, ``sigma_prop_conc``,
        ...). Columns: ``kind``, ``unit``, ``median``, ``q5`` and ``q95`` (for ``prob=0.9``),
        ``cv_percent`` (with ``cv_q5``, ``cv_q95``) for between-subject and between-study SDs
        of log-normal parameters, ``shrinkage_percent`` for between-subject SDs, ``r_hat``,
        ``ess_bulk``, ``ess_tail`` (NaN for one chain) and ``prior``. Estimated correlations
        follow (:func:`correlations`: ``corr_<a>_<b>``, ``corr_iov_<a>_<b>``, kinds
        ``between-subject correlation`` and ``between-occasion correlation``). Fixed
        parameters appear with kind ``fixed`` and their value as the median.
    """
    idata = as_fit(fit)
    post = idata.posterior
    lo_q, hi_q = (1 - prob) / 2, 1 - (1 - prob) / 2
    lo_c, hi_c = f"q{100 * lo_q:g}", f"q{100 * hi_q:g}"
    transforms = _transform_of(idata)
    shr = shrinkage(idata)
    priors = _prior_text(idata)
    rows = []
    for v in population_variables(idata):
        x = post[v]
        vals = np.asarray(x.values, dtype=float).reshape(-1)
        kind = _kind(v)
        row = {
            "parameter": v,
            "kind": kind,
            "unit": x.attrs.get("units", ""),
            "median": float(np.median(vals)),
            lo_c: float(np.quantile(vals, lo_q)),
            hi_c: float(np.quantile(vals, hi_q)),
            "cv_percent": np.nan,
            f"cv_{lo_c}": np.nan,
            f"cv_{hi_c}": np.nan,
            "shrinkage_percent": np.nan,
        }
        if kind in _SD_PREFIX:
            p = v[len(_SD_PREFIX[kind]) :]
            if transforms.get(p, "log") == "log":
                # monotone in omega: quantiles of the CV are the CV of omega's quantiles
                row["cv_percent"] = float(cv_percent(row["median"]))
                row[f"cv_{lo_c}"] = float(cv_percent(row[lo_c]))
                row[f"cv_{hi_c}"] = float(cv_percent(row[hi_c]))
            row["unit"] = "SD, logit scale" if transforms.get(p) == "logit" else "SD, log scale"
            if kind == "between-subject SD" and p in shr.index:
                row["shrinkage_percent"] = float(shr[p])
            if kind == "between-occasion SD" and f"iov_{p}" in shr.index:
                row["shrinkage_percent"] = float(shr[f"iov_{p}"])
        row.update(
            r_hat=_rhat(x),
            ess_bulk=_ess(x, "bulk"),
            ess_tail=_ess(x, "tail"),
            prior=priors.get(v, ""),
        )
        rows.append(row)
    for name, x in correlations(idata).items():
        vals = np.asarray(x.values, dtype=float).reshape(-1)
        rows.append(
            {
                "parameter": name,
                "kind": x.attrs["kind"],
                "unit": "correlation",
                "median": float(np.median(vals)),
                lo_c: float(np.quantile(vals, lo_q)),
                hi_c: float(np.quantile(vals, hi_q)),
                "r_hat": _rhat(x),
                "ess_bulk": _ess(x, "bulk"),
                "ess_tail": _ess(x, "tail"),
                "prior": x.attrs["prior"],
            }
        )
    fixed = json.loads(idata.attrs.get("fixed", "{}"))
    units = _parameter_units(idata)
    for p, val in fixed.items():
        rows.append(
            {
                "parameter": f"pop_{p}",
                "kind": "fixed",
                "unit": units.get(p, ""),
                "median": float(val),
                "prior": "fixed",
            }
        )
    return pd.DataFrame(rows).set_index("parameter")


def _parameter_units(idata) -> dict[str, str]:
    return {
        p: str(e.get("unit", ""))
        for p, e in (_priors_raw(idata).get("parameters") or {}).items()
        if isinstance(e, dict)
    }


def convergence_table(fit) -> pd.DataFrame:
    """R-hat, bulk and tail ESS and Monte Carlo SE of the median of every population quantity.

    Returns
    -------
    pandas.DataFrame
        Indexed by variable; columns ``r_hat``, ``ess_bulk``, ``ess_tail``, ``mcse_median``
        and ``ok`` (R-hat <= 1.01 and both ESS >= 400; NaN R-hat with one chain counts as
        not checked, ``ok`` is then None).
    """
    import arviz as az

    idata = as_fit(fit)
    post = idata.posterior
    rows = []
    for v in population_variables(idata):
        x = post[v]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mc = float(az.mcse(x.to_dataset(name="v"), method="median")["v"].values)
        except Exception:  # noqa: BLE001
            mc = np.nan
        r, eb, et = _rhat(x), _ess(x, "bulk"), _ess(x, "tail")
        ok = None if np.isnan(r) else bool(r <= RHAT_MAX and eb >= ESS_MIN and et >= ESS_MIN)
        rows.append(
            {"parameter": v, "r_hat": r, "ess_bulk": eb, "ess_tail": et, "mcse_median": mc,
             "ok": ok}
        )  # fmt: skip
    return pd.DataFrame(rows).set_index("parameter")


def sampler_table(fit) -> pd.DataFrame:
    """Per chain: draws, divergent transitions, mean acceptance, tree depth and E-BFMI.

    Empty (no rows) for fits without MCMC sampler statistics (``method="map"``).
    """
    import arviz as az

    idata = as_fit(fit)
    if "sample_stats" not in idata.groups() or "diverging" not in idata.sample_stats:
        return pd.DataFrame(
            columns=["draws", "divergent", "accept_mean", "tree_depth_mean", "tree_depth_max",
                     "bfmi"]
        )  # fmt: skip
    ss = idata.sample_stats
    try:
        bfmi = np.asarray(az.bfmi(idata), dtype=float)
    except Exception:  # noqa: BLE001
        bfmi = np.full(ss.sizes["chain"], np.nan)
    rows = []
    for c in range(ss.sizes["chain"]):
        sel = ss.isel(chain=c)
        rows.append(
            {
                "chain": c,
                "draws": int(sel.sizes["draw"]),
                "divergent": int(np.asarray(sel["diverging"]).sum()),
                "accept_mean": float(np.mean(sel["acceptance_rate"]))
                if "acceptance_rate" in sel
                else np.nan,
                "tree_depth_mean": float(np.mean(sel["tree_depth"]))
                if "tree_depth" in sel
                else np.nan,
                "tree_depth_max": int(np.max(sel["tree_depth"])) if "tree_depth" in sel else -1,
                "bfmi": float(bfmi[c]) if c < len(bfmi) else np.nan,
            }
        )
    return pd.DataFrame(rows).set_index("chain")


def convergence_messages(fit) -> list[str]:
    """Plain-language verdicts on convergence (empty list: nothing to report)."""
    idata = as_fit(fit)
    method = idata.attrs.get("method", "nuts")
    if method != "nuts":
        return [
            f"method {method!r}: posterior mode and Laplace approximation, not MCMC; R-hat, "
            "ESS and divergences do not apply, and between-subject SDs may be overstated. "
            "Confirm with a NUTS fit before using the numbers."
        ]
    from pkpd.inference.summary import convergence_warnings

    ct = convergence_table(idata)
    out = convergence_warnings(idata, ct)  # R-hat, ESS, divergences: the CLI's own wording
    st = sampler_table(idata)
    if len(st) and np.any(st["bfmi"] < 0.3):
        out.append("E-BFMI < 0.3 in some chain: the sampler explores the energy poorly")
    if ct["r_hat"].isna().all():
        out.append("one chain only: R-hat cannot be computed; run at least 2 chains")
    return out


def data_table(fit) -> pd.DataFrame:
    """Subjects, observations and BLQ observations by study and endpoint (fitted data)."""
    idata = as_fit(fit)
    cd = idata.constant_data
    subj = np.asarray(cd["obs_subject"].values).astype(str)
    ep = np.asarray(cd["obs_endpoint"].values).astype(str)
    blq = np.asarray(cd["obs_blq"].values).astype(bool)
    study_of = dict(
        zip(
            np.asarray(idata.posterior["subject"].values).astype(str),
            np.asarray(cd["subject_study"].values).astype(str),
            strict=True,
        )
    )
    study = np.array([study_of[s] for s in subj], dtype=object)
    df = pd.DataFrame({"study": study, "endpoint": ep, "subject": subj, "blq": blq})
    g = df.groupby(["study", "endpoint"], sort=False)
    out = pd.DataFrame(
        {
            "subjects": g["subject"].nunique(),
            "observations": g.size(),
            "blq": g["blq"].sum().astype(int),
        }
    )
    out["blq_percent"] = 100.0 * out["blq"] / out["observations"]
    return out
