"""Parameter and convergence tables of a fit (what `pkpd fit` prints)."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Thresholds a converged fit meets (Vehtari et al. 2021, "Rank-normalization, folding, and
#: localization: an improved R-hat").
RHAT_MAX = 1.01
ESS_MIN = 400


def _population_vars(idata) -> list[str]:
    prefixes = ("pop_", "omega_", "beta_", "sigma_")
    return [
        v
        for v in idata.posterior.data_vars
        if v.startswith(prefixes) and idata.posterior[v].ndim == 2
    ]


def parameter_table(idata, *, prob: float = 0.90) -> pd.DataFrame:
    """Median, central credible interval, R-hat and ESS of every population-level quantity.

    ``omega_*`` rows also give the between-subject CV in % (``100·sqrt(exp(ω²) − 1)``, exact
    for log-normal variability).
    """
    import arviz as az

    names = _population_vars(idata)
    lo_q, hi_q = (1 - prob) / 2, 1 - (1 - prob) / 2
    rows = []
    for v in names:
        x = idata.posterior[v]
        ds = x.to_dataset(name="v")  # ArviZ 0.2x diagnostics return Datasets
        vals = x.values.reshape(-1)
        multi_chain = x.sizes["chain"] > 1
        row = {
            "parameter": v,
            "unit": x.attrs.get("units", ""),
            "median": float(np.median(vals)),
            f"q{100 * lo_q:g}": float(np.quantile(vals, lo_q)),
            f"q{100 * hi_q:g}": float(np.quantile(vals, hi_q)),
            "r_hat": float(az.rhat(ds)["v"]) if multi_chain else np.nan,
            "ess_bulk": float(az.ess(ds, method="bulk")["v"]),
            "ess_tail": float(az.ess(ds, method="tail")["v"]),
        }
        if v.startswith("omega_"):
            row["cv_percent"] = float(100 * np.sqrt(np.expm1(np.median(vals) ** 2)))
        rows.append(row)
    return pd.DataFrame(rows).set_index("parameter")


def convergence_warnings(idata, table: pd.DataFrame | None = None) -> list[str]:
    """Human-readable warnings: R-hat above 1.01, ESS below 400, divergent transitions."""
    table = parameter_table(idata) if table is None else table
    out = []
    bad = table.index[table["r_hat"] > RHAT_MAX].tolist()
    if bad:
        out.append(f"R-hat > {RHAT_MAX} for {', '.join(bad)}: chains disagree; run longer")
    low = table.index[(table["ess_bulk"] < ESS_MIN) | (table["ess_tail"] < ESS_MIN)].tolist()
    if low:
        out.append(f"ESS < {ESS_MIN} for {', '.join(low)}: too few effective draws; run longer")
    n_div = 0
    if "sample_stats" in idata.groups() and "diverging" in idata.sample_stats:
        n_div = int(idata.sample_stats["diverging"].sum())
        if n_div:
            out.append(
                f"{n_div} divergent transitions: the posterior is hard to explore; raise "
                "target_accept (--target-accept 0.9) or reparameterise"
            )
    if out:
        advice = parameterization_advice(idata, bad + low, divergent=bool(n_div))
        if advice:
            out.append(advice)
    return out


def _base_parameter(name: str, parameters) -> str | None:
    """The structural parameter a table row is about (``omega_cl`` → ``cl``), or None."""
    for prefix in ("omega_study_", "omega_", "pop_", "eta_study_", "eta_", "theta_"):
        if name.startswith(prefix) and name[len(prefix) :] in parameters:
            return name[len(prefix) :]
    return None


def parameterization_advice(idata, names, *, divergent: bool = False) -> str | None:
    """Which parameters' subject-effect parameterisation to change, from a NUTS fit's attrs.

    Subject effects sampled centred (``centered_subjects``) funnel when the data say little
    about them, and non-centred ones mix slowly when the data pin them; the advice names the
    parameters among the poorly converged rows (or, with divergences, every centred one) and the
    ``--parameterization`` to try.
    """
    import json

    counts = json.loads(idata.attrs.get("centered_subjects", "{}") or "{}")
    if not counts:
        return None
    how = idata.attrs.get("parameterization", "auto")
    params = set(counts)
    flagged = {b for b in (_base_parameter(n, params) for n in names) if b}
    centred = sorted(p for p in flagged if counts.get(p))
    if divergent:
        centred = sorted(set(centred) | {p for p, c in counts.items() if c})
    noncentred = sorted(p for p in flagged if not counts.get(p))
    parts = []
    if centred and how != "noncentered":
        parts.append(
            f"subject effects of {', '.join(centred)} were sampled centred ({how}); if the data "
            "say little about them, refit with --parameterization noncentered"
        )
    if noncentred and how != "centered" and not divergent:
        parts.append(
            f"subject effects of {', '.join(noncentred)} were sampled non-centred; if every "
            "subject's data pin them, refit with --parameterization centered"
        )
    return "; ".join(parts) or None


def parameterization_check_text(idata) -> str | None:
    """What ``auto``'s check by its chains did (``attrs["parameterization_check"]``), in words;
    ``None`` when no rerun was made."""
    import json

    check = json.loads(idata.attrs.get("parameterization_check", "{}") or "{}")
    if not check:
        return None
    kept = (
        "kept the non-centred run"
        if check["kept"] == "noncentered"
        else "kept the auto run (the non-centred one diverged at least as often)"
    )
    return (
        f"auto centred subject effects of {', '.join(check['centered'])} and "
        f"{check['divergences_centered']} transitions diverged, at small omega of "
        f"{', '.join(check['funnel'])}; rerun with every subject effect non-centred: "
        f"{check['divergences_noncentered']} divergences; {kept}"
    )


def format_table(table: pd.DataFrame) -> str:
    with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 140):
        return table.to_string()
