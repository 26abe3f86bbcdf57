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
    if "sample_stats" in idata.groups() and "diverging" in idata.sample_stats:
        n = int(idata.sample_stats["diverging"].sum())
        if n:
            out.append(
                f"{n} divergent transitions: the posterior is hard to explore; raise target_accept "
                "or reparameterise"
            )
    return out


def format_table(table: pd.DataFrame) -> str:
    with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 140):
        return table.to_string()
