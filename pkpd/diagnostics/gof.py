"""Goodness-of-fit plots and NPDE tests per endpoint.

Observed values against population (PRED) and individual (IPRED) predictions, and NPDE
(:mod:`pkpd.diagnostics.predictive`) against time and against PRED, with their distribution
against N(0, 1). Points are coloured by study; observations below the LLOQ are left out of
the DV panels and shown with their imputed NPDE as crosses.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from pkpd.diagnostics._common import (
    as_fit,
    colour_map,
    endpoint_rows,
    endpoint_units,
    new_figure,
    panel_grid,
    plain_text,
    positive_log_scale,
)


def _get_ppc(idata, ppc, **kw):
    if ppc is not None:
        return ppc
    from pkpd.diagnostics.predictive import posterior_predictive

    return posterior_predictive(idata, **kw)


def _binned_median(x, y, n_bins=10):
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2 * n_bins:
        return np.array([]), np.array([])
    edges = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1)))
    which = np.clip(np.digitize(x, edges[1:-1]), 0, len(edges) - 2)
    xm = np.array([np.median(x[which == b]) for b in range(len(edges) - 1) if (which == b).any()])
    ym = np.array([np.median(y[which == b]) for b in range(len(edges) - 1) if (which == b).any()])
    return xm, ym


def gof(fit, endpoint: str, *, x: str = "time", ppc=None, **ppc_options):
    """Goodness-of-fit panels of one endpoint.

    Parameters
    ----------
    fit : arviz.InferenceData or path
    endpoint : str
    x : {"time", "tad", "auto"}
        Time axis of the NPDE-vs-time panel (``"auto"``: as
        :func:`~pkpd.diagnostics.vpc.choose_x`).
    ppc : xarray.Dataset, optional
        From :func:`~pkpd.diagnostics.predictive.posterior_predictive` (computed when not
        given, with ``ppc_options``).

    Returns
    -------
    matplotlib.figure.Figure
        Top: DV vs PRED, DV vs IPRED (identity line, log axes when the values span decades),
        NPDE quantiles vs N(0, 1). Bottom: NPDE vs time, NPDE vs PRED (running median in
        red, ±1.96 dotted), NPDE histogram with the N(0, 1) density.
    """
    idata = as_fit(fit)
    ppc = _get_ppc(idata, ppc, **ppc_options)
    m = endpoint_rows(ppc, endpoint)
    if x == "auto":
        from pkpd.diagnostics.vpc import choose_x

        x = choose_x(ppc, endpoint)
    dv = np.asarray(ppc["dv"].values, dtype=float)[m]
    blq = np.asarray(ppc["blq"].values, dtype=bool)[m]
    pred = np.asarray(ppc["pred"].values, dtype=float)[m]
    ipred = np.asarray(ppc["ipred"].values, dtype=float)[m]
    nd = np.asarray(ppc["npde"].values, dtype=float)[m]
    t = np.asarray(ppc[x].values, dtype=float)[m]
    study = np.asarray(ppc["study"].values).astype(str)[m]
    unit = endpoint_units(idata).get(endpoint, "")
    colours = colour_map(list(dict.fromkeys(study)))
    fig, axs = new_figure(13, 7.6, nrows=2, ncols=3)
    log = positive_log_scale(np.concatenate([dv[~blq], pred[~blq], ipred[~blq]]))
    for ax, p, name in ((axs[0, 0], pred, "PRED"), (axs[0, 1], ipred, "IPRED")):
        for s, c in colours.items():
            k = (study == s) & ~blq
            ax.plot(p[k], dv[k], "o", ms=2.5, alpha=0.55, color=c, label=plain_text(s))
        ok = ~blq & np.isfinite(p) & np.isfinite(dv)
        if ok.any():
            lo = float(np.nanmin(np.concatenate([p[ok], dv[ok]])))
            hi = float(np.nanmax(np.concatenate([p[ok], dv[ok]])))
            if log:
                lo = max(lo, hi * 1e-6)
            ax.plot([lo, hi], [lo, hi], "-", color="k", lw=1)
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
        u = f" ({unit})" if unit else ""
        ax.set_xlabel(f"{name}{u}")
        ax.set_ylabel(f"observed{u}")
        ax.set_title(f"observed vs {name}" + (f" ({int(blq.sum())} BLQ not shown)" if blq.any() else ""),
                     fontsize=10)  # fmt: skip
    axs[0, 0].legend(fontsize=7, title="study", title_fontsize=7, markerscale=2)
    good = np.isfinite(nd)
    q = axs[0, 2]
    if good.any():
        srt = np.sort(nd[good])
        theo = stats.norm.ppf((np.arange(1, srt.size + 1) - 0.5) / srt.size)
        q.plot(theo, srt, "o", ms=2.5, color="tab:blue", alpha=0.6)
        lim = [min(theo[0], srt[0]), max(theo[-1], srt[-1])]
        q.plot(lim, lim, "-", color="k", lw=1)
    q.set_xlabel("N(0, 1) quantile")
    q.set_ylabel("NPDE")
    q.set_title("NPDE quantiles", fontsize=10)
    for ax, xv, name in (
        (axs[1, 0], t, "time after dose (h)" if x == "tad" else "time (h)"),
        (axs[1, 1], pred, f"PRED ({unit})" if unit else "PRED"),
    ):
        for s, c in colours.items():
            k = (study == s) & ~blq
            ax.plot(xv[k], nd[k], "o", ms=2.5, alpha=0.55, color=c)
            k = (study == s) & blq
            ax.plot(xv[k], nd[k], "x", ms=3.5, alpha=0.8, color=c)
        xm, ym = _binned_median(xv, nd)
        ax.plot(xm, ym, "-", color="tab:red", lw=1.5)
        for h in (-1.96, 0.0, 1.96):
            ax.axhline(h, ls=":" if h else "-", color="k", lw=0.8)
        if name.startswith("PRED") and log and np.all(xv[np.isfinite(xv)] > 0):
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel("NPDE")
        ax.set_title(f"NPDE vs {name.split(' (')[0]}" + (" (x: BLQ, imputed)" if blq.any() else ""),
                     fontsize=10)  # fmt: skip
    h = axs[1, 2]
    if good.any():
        h.hist(nd[good], bins=30, density=True, color="tab:blue", alpha=0.5)
        g = np.linspace(-4, 4, 200)
        h.plot(g, stats.norm.pdf(g), "-", color="k", lw=1)
    h.set_xlabel("NPDE")
    h.set_ylabel("density")
    h.set_title("NPDE distribution vs N(0, 1)", fontsize=10)
    fig.suptitle(f"Goodness of fit: {endpoint}", fontsize=12)
    return fig


def npde_summary(fit, *, ppc=None, **ppc_options) -> pd.DataFrame:
    """Tests of NPDE against N(0, 1) per endpoint (as the R package npde reports them).

    Returns
    -------
    pandas.DataFrame
        Per endpoint: ``n``, ``mean``, ``variance``, ``skewness``, ``kurtosis`` (excess), and
        p-values of the t-test (mean 0), the Fisher test (variance 1), the Shapiro–Wilk test
        (normality) and their Bonferroni-corrected minimum ``p_global``. Small p-values point to
        model misspecification (with many observations, also to small misfits).
    """
    idata = as_fit(fit)
    ppc = _get_ppc(idata, ppc, **ppc_options)
    ep = np.asarray(ppc["endpoint"].values).astype(str)
    nd_all = np.asarray(ppc["npde"].values, dtype=float)
    rows = []
    for e in dict.fromkeys(ep):
        v = nd_all[(ep == e) & np.isfinite(nd_all)]
        n = v.size
        if n < 3:
            rows.append({"endpoint": e, "n": n})
            continue
        var = float(np.var(v, ddof=1))
        p_mean = float(stats.ttest_1samp(v, 0.0).pvalue)
        chi = (n - 1) * var
        p_var = float(2 * min(stats.chi2.cdf(chi, n - 1), stats.chi2.sf(chi, n - 1)))
        p_sw = float(stats.shapiro(v[:5000]).pvalue)
        rows.append(
            {
                "endpoint": e,
                "n": n,
                "mean": float(np.mean(v)),
                "variance": var,
                "skewness": float(stats.skew(v)),
                "kurtosis": float(stats.kurtosis(v)),
                "p_mean": p_mean,
                "p_variance": p_var,
                "p_normality": p_sw,
                "p_global": float(min(1.0, 3 * min(p_mean, p_var, p_sw))),
            }
        )
    return pd.DataFrame(rows).set_index("endpoint")


def individual_fits(
    fit, endpoint: str, *, subjects=None, max_subjects: int = 12, ppc=None, **ppc_options
):
    """Observations, IPRED and PRED over time for a few subjects (a panel each).

    Parameters
    ----------
    subjects : sequence of str, optional
        Subject IDs (default: the first ``max_subjects`` with observations, spread over the
        studies).
    """
    idata = as_fit(fit)
    ppc = _get_ppc(idata, ppc, **ppc_options)
    ep = np.asarray(ppc["endpoint"].values).astype(str)
    subj = np.asarray(ppc["subject"].values).astype(str)
    study = np.asarray(ppc["study"].values).astype(str)
    m_ep = ep == endpoint
    if subjects is None:
        by_study: dict[str, list[str]] = {}
        for s, st in zip(subj[m_ep], study[m_ep], strict=True):
            lst = by_study.setdefault(st, [])
            if s not in lst:
                lst.append(s)
        subjects = []
        while len(subjects) < max_subjects and any(by_study.values()):
            for lst in by_study.values():
                if lst and len(subjects) < max_subjects:
                    subjects.append(lst.pop(0))
    subjects = [str(s) for s in subjects]
    if not subjects:
        raise ValueError(f"no subject has {endpoint} observations")
    fig, panels = panel_grid(len(subjects), 4, 3.3, 2.6)
    t = np.asarray(ppc["time"].values, dtype=float)
    dv = np.asarray(ppc["dv"].values, dtype=float)
    blq = np.asarray(ppc["blq"].values, dtype=bool)
    lloq = np.asarray(ppc["lloq"].values, dtype=float)
    pred = np.asarray(ppc["pred"].values, dtype=float)
    ipred = np.asarray(ppc["ipred"].values, dtype=float)
    unit = endpoint_units(idata).get(endpoint, "")
    from matplotlib.ticker import NullFormatter

    for ax, s in zip(panels, subjects, strict=True):
        m = m_ep & (subj == s)
        o = np.argsort(t[m])
        ax.plot(t[m][o], ipred[m][o], "-", color="tab:blue", lw=1.2, label="IPRED")
        ax.plot(t[m][o], pred[m][o], "--", color="0.4", lw=1, label="PRED")
        ax.plot(t[m][~blq[m]], dv[m][~blq[m]], "o", ms=3, color="k", label="observed")
        if blq[m].any():
            ax.plot(t[m][blq[m]], lloq[m][blq[m]], "x", ms=4, color="tab:orange", label="BLQ")
        if positive_log_scale(np.concatenate([dv[m & ~blq], ipred[m]])):
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())
        st = study[m][0] if m.any() else ""
        ax.set_title(plain_text(f"subject {s} ({st})"), fontsize=9)
        ax.tick_params(labelsize=7)
    panels[0].legend(fontsize=6)
    fig.supxlabel("time (h)", fontsize=9)
    fig.supylabel(f"{endpoint} ({unit})" if unit else endpoint, fontsize=9)
    fig.suptitle(f"Individual fits: {endpoint}", fontsize=11)
    return fig
