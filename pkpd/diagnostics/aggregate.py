"""Published arm-level summaries beside what the fitted model predicts for them."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd


def aggregate_table(fit, quantiles=(0.05, 0.5, 0.95), seed: int = 0) -> pd.DataFrame:
    """Each published summary beside its posterior predictive distribution.

    The predictive distribution is that of the statistic a trial of the arm's ``n`` would
    report: for every posterior draw, the predicted summary (``aggregate_mu``) plus one
    normal sampling error (``aggregate_se``), on the statistic's scale (log for geometric
    means and medians of positive metrics).

    Parameters
    ----------
    fit : arviz.InferenceData
        A fit with aggregate data (:func:`pkpd.fit` with ``aggregate=``).
    quantiles : sequence of float
        Predictive quantiles to show (columns ``pred_q5``, ``pred_q50``, ...).
    seed : int
        Seed of the sampling errors.

    Returns
    -------
    pandas.DataFrame
        One row per summary: study, arm, endpoint, metric, statistic, n, the published value
        in the model's unit, the predictive quantiles, ``tail`` (predictive probability below
        the published value: near 0 or 1, the model does not reproduce it), ``mc_ratio`` (Monte
        Carlo SE of the prediction over the summary's SE) and the source.
    """
    fit = _as_fit(fit)
    post = fit.posterior
    if "aggregate_mu" not in post:
        raise ValueError("the fit has no aggregate data (pkpd.fit(..., aggregate=...))")
    rows = json.loads(fit.attrs["aggregate_rows"])
    mu = post["aggregate_mu"].values.reshape(-1, len(rows))
    se = post["aggregate_se"].values.reshape(-1, len(rows))
    rng = np.random.default_rng(seed)
    pred = mu + se * rng.standard_normal(mu.shape)
    out = []
    for i, r in enumerate(rows):
        p = np.exp(pred[:, i]) if r["log_scale"] else pred[:, i]
        q = np.nanquantile(p, quantiles)
        rec = {k: r[k] for k in ("study", "arm", "endpoint", "metric", "statistic", "n")}
        rec.update(
            published=r["value_model"],
            unit=r["model_unit"],
            **{f"pred_q{int(round(100 * qq))}": v for qq, v in zip(quantiles, q, strict=True)},
            tail=float(np.mean(p < r["value_model"])),
            mc_ratio=r["mc_ratio"],
            source=r["source"],
        )
        out.append(rec)
    return pd.DataFrame(out)


def aggregate_plot(fit, seed: int = 0):
    """Each published summary (dot) against its 90% posterior predictive interval (bar, median
    tick), all relative to the predictive median so that summaries of any unit share one axis."""
    from pkpd.diagnostics._common import new_figure, plain_text

    tab = aggregate_table(fit, seed=seed)
    n = len(tab)
    fig, axs = new_figure(7.5, 0.9 + 0.32 * n)
    ax = axs[0, 0]
    y = np.arange(n)[::-1]
    mid = tab["pred_q50"].to_numpy(float)
    lo, hi = tab["pred_q5"].to_numpy(float) / mid, tab["pred_q95"].to_numpy(float) / mid
    ax.hlines(y, lo, hi, color="#4a7fb0", lw=3, alpha=0.6, label="90% predictive interval")
    ax.plot(np.ones(n), y, "|", color="#4a7fb0", ms=10)
    ax.plot(tab["published"].to_numpy(float) / mid, y, "o", color="#d9534f", label="published")
    ax.axvline(1.0, color="#999", lw=0.8)
    ax.set_xscale("log")
    from matplotlib.ticker import FormatStrFormatter

    ax.xaxis.set_minor_formatter(FormatStrFormatter("%.2g"))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%.2g"))
    ax.set_ylim(-0.7, n - 0.3)
    labels = [
        plain_text(f"{r.study}/{r.arm}: {r.statistic} {r.metric} {r.endpoint} (n={r.n})")
        for r in tab.itertuples()
    ]
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel("relative to the predictive median")
    ax.legend(fontsize=7, loc="best")
    return fig


def _as_fit(fit):
    from pkpd.diagnostics._common import as_fit

    return as_fit(fit)


__all__ = ["aggregate_plot", "aggregate_table"]
