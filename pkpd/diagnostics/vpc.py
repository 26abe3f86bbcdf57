r"""Visual predictive checks (VPC) and prediction-corrected VPCs, aware of BLQ data.

The observations of one endpoint (and study) are binned in time; in each bin the 5th, 50th
and 95th percentiles of the observations are compared with the same percentiles of every
replicate of the trial (:func:`~pkpd.diagnostics.predictive.posterior_predictive`), shown as the
median and a ``prob`` interval over replicates.

Below-LLOQ data (Bergstrand et al. 2009, AAPS J 11:371): an observed BLQ value counts as lower
than any measured one, so a percentile of the observations is known whenever it falls above
the LLOQ and is not drawn where it falls below; replicates are not censored, and their
percentiles above the LLOQ are exactly comparable. A second panel compares the fraction of
observations below the LLOQ with the fraction of replicates below it.

Prediction correction (Bergstrand et al. 2011, AAPS J 13:143): each value ``y`` with population
prediction ``PRED`` is rescaled to the median ``PRED`` of its bin: ``y · PRED_bin / PRED`` for
proportional, combined and log-normal error models, ``y + PRED_bin − PRED`` for additive
ones, and on the logit scale for percentages; this removes the spread that dose levels and
covariates put into a bin.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from pkpd.diagnostics._common import (
    as_fit,
    endpoint_rows,
    endpoint_units,
    plain_text,
    positive_log_scale,
)

#: Percentiles of the observations a VPC shows.
PERCENTILES = (0.05, 0.5, 0.95)


def _get_ppc(idata, ppc, **kw):
    if ppc is not None:
        return ppc
    from pkpd.diagnostics.predictive import posterior_predictive

    return posterior_predictive(idata, **kw)


def bin_edges(x, n_bins: int = 8) -> np.ndarray:
    """Bin edges for ``x``: one bin per distinct value when there are few (nominal times),
    otherwise edges at quantiles (about equal numbers of observations per bin)."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return np.array([0.0, 1.0])
    u = np.unique(x)
    if u.size <= n_bins:
        mids = (u[1:] + u[:-1]) / 2
        return np.concatenate([[u[0] - 0.5], mids, [u[-1] + 0.5]])
    edges = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1)))
    edges[0], edges[-1] = x.min() - 1e-9, x.max() + 1e-9
    return edges


def choose_x(ppc, endpoint: str) -> str:
    """``"tad"`` when time after dose explains the observations clearly better than time.

    The score of each axis is the R² of the bin medians of the observations (on the log scale
    when they are positive): weekly dosing with sampling after several doses makes time after
    dose the natural VPC axis for concentrations, while slow responses (turnover over weeks)
    follow time since the first dose. Ties go to time.
    """
    ep = np.asarray(ppc["endpoint"].values).astype(str)
    dv = np.asarray(ppc["dv"].values, dtype=float)
    m = (ep == endpoint) & np.isfinite(dv)
    y = dv[m]
    if y.size < 10:
        return "time"
    if np.all(y > 0):
        y = np.log(y)
    total = float(np.sum((y - y.mean()) ** 2))
    if total <= 0:
        return "time"
    score = {}
    for x in ("time", "tad"):
        xv = np.asarray(ppc[x].values, dtype=float)[m]
        edges = bin_edges(xv, 8)
        which = np.clip(np.digitize(xv, edges[1:-1]), 0, len(edges) - 2)
        fitted = np.empty_like(y)
        for b in np.unique(which):
            fitted[which == b] = np.median(y[which == b])
        score[x] = 1.0 - float(np.sum((y - fitted) ** 2)) / total
    return "tad" if score["tad"] > score["time"] + 0.05 else "time"


def _pc(values, pred, pred_bin, error_model: str):
    """Prediction-corrected values (module docstring)."""
    values = np.asarray(values, dtype=float)
    if error_model == "additive":
        return values + (pred_bin - pred)
    if error_model == "logit":

        def lg(v):
            p = np.clip(v / 100.0, 1e-12, 1 - 1e-12)
            return np.log(p) - np.log1p(-p)

        z = lg(values) + lg(pred_bin) - lg(pred)
        return 100.0 / (1.0 + np.exp(-z))
    with np.errstate(divide="ignore", invalid="ignore"):
        return values * (pred_bin / pred)


def vpc_table(
    fit,
    endpoint: str,
    *,
    study: str | None = None,
    prediction_corrected: bool = False,
    x: str = "auto",
    n_bins: int = 8,
    bins=None,
    prob: float = 0.90,
    ppc=None,
    **ppc_options,
) -> pd.DataFrame:
    """The numbers of a VPC: observed and simulated percentiles and BLQ fractions per bin.

    Parameters
    ----------
    fit : arviz.InferenceData or path
    endpoint : str
        Endpoint name (as fitted).
    study : str, optional
        Only this study's observations (default: every study together).
    prediction_corrected : bool
        Prediction-corrected VPC (module docstring).
    x : {"auto", "time", "tad"}
        Time since the first record or time after the latest dose, h; ``"auto"``: the one
        that explains the observations better (:func:`choose_x`).
    n_bins : int
        Bins (at most) when ``bins`` is not given.
    bins : array, optional
        Bin edges in h.
    prob : float
        Mass of the interval over replicates of each simulated percentile.
    ppc : xarray.Dataset, optional
        The result of :func:`~pkpd.diagnostics.predictive.posterior_predictive` (computed
        when not given, with ``ppc_options``).

    Returns
    -------
    pandas.DataFrame
        One row per bin: ``x_lo``, ``x_hi``, ``x_mid`` (median x of its observations),
        ``n_obs``, ``n_blq``, ``lloq``; observed percentiles ``obs_p5``, ``obs_p50``,
        ``obs_p95`` (NaN where BLQ decides them); simulated ``sim_p5_lo``/``_med``/``_hi``
        (and for p50, p95); ``blq_obs`` and ``blq_sim_lo``/``_med``/``_hi`` (fractions);
        ``inside`` (fraction of observations between the median simulated 5th and 95th
        percentiles, a BLQ observation counting with the probability that its replicates below
        its LLOQ fall in that band; about 0.9 when the model describes the data).
    """
    idata = as_fit(fit)
    ppc = _get_ppc(idata, ppc, **ppc_options)
    if x not in ("auto", "time", "tad"):
        raise ValueError(f"x={x!r}; expected 'auto', 'time' or 'tad'")
    sel = endpoint_rows(ppc, endpoint)
    if x == "auto":
        x = choose_x(ppc, endpoint)
    if study is not None:
        studies = np.asarray(ppc["study"].values).astype(str)
        if study not in set(studies[sel]):
            raise ValueError(
                f"study {study!r} has no {endpoint} observations; studies with some: "
                f"{sorted(set(studies[sel]))}"
            )
        sel &= studies == study
    idx = np.nonzero(sel)[0]
    xv = np.asarray(ppc[x].values, dtype=float)[idx]
    dv = np.asarray(ppc["dv"].values, dtype=float)[idx]
    blq = np.asarray(ppc["blq"].values, dtype=bool)[idx]
    lloq = np.asarray(ppc["lloq"].values, dtype=float)[idx]
    pred = np.asarray(ppc["pred"].values, dtype=float)[idx]
    sims = np.asarray(ppc["y_sim"].values, dtype=float)[:, idx]
    error_model = json.loads(ppc.attrs.get("error_models", "{}")).get(endpoint, "proportional")
    edges = np.asarray(bins, dtype=float) if bins is not None else bin_edges(xv, n_bins)
    which = np.clip(np.digitize(xv, edges[1:-1]), 0, len(edges) - 2)
    lo_q, hi_q = (1 - prob) / 2, 1 - (1 - prob) / 2
    rows = []
    for b in range(len(edges) - 1):
        m = which == b
        if not m.any():
            continue
        y = np.where(blq[m], -np.inf, dv[m])
        s = sims[:, m]
        ll = lloq[m]
        if prediction_corrected:
            pb = float(np.nanmedian(pred[m]))
            y = np.where(blq[m], -np.inf, _pc(dv[m], pred[m], pb, error_model))
            s = _pc(s, pred[m][None, :], pb, error_model)
            ll = _pc(ll, pred[m], pb, error_model)
        lloq_bin = float(np.nanmedian(ll)) if np.isfinite(ll).any() else np.nan
        row = {
            "x_lo": float(edges[b]),
            "x_hi": float(edges[b + 1]),
            "x_mid": float(np.median(xv[m])),
            "n_obs": int(m.sum()),
            "n_blq": int(blq[m].sum()),
            "lloq": lloq_bin,
        }
        finite = np.isfinite(s)
        with np.errstate(invalid="ignore"):
            for q in PERCENTILES:
                name = f"p{100 * q:g}"
                ov = float(np.quantile(y, q, method="linear")) if y.size else np.nan
                if not np.isfinite(ov) or (np.isfinite(lloq_bin) and ov < lloq_bin):
                    ov = np.nan  # decided by BLQ observations: unknown
                row[f"obs_{name}"] = ov
                sq = np.nanquantile(np.where(finite, s, np.nan), q, axis=1)
                row[f"sim_{name}_lo"], row[f"sim_{name}_med"], row[f"sim_{name}_hi"] = (
                    float(v) for v in np.nanquantile(sq, [lo_q, 0.5, hi_q])
                )
            sim_blq = np.mean(s < ll[None, :], axis=1) if np.isfinite(ll).any() else np.zeros(1)
        row["blq_obs"] = float(np.mean(blq[m]))
        row["blq_sim_lo"], row["blq_sim_med"], row["blq_sim_hi"] = (
            float(v) for v in np.quantile(sim_blq, [lo_q, 0.5, hi_q])
        )
        # fraction inside the median simulated 5-95% band; a BLQ observation counts with the
        # probability its replicates below its LLOQ lie inside the band
        lo_b, hi_b = row["sim_p5_med"], row["sim_p95_med"]
        ins = ((y >= lo_b) & (y <= hi_b)).astype(float)
        cens = np.nonzero(blq[m])[0]
        if cens.size:
            sc, lc = s[:, cens], ll[cens][None, :]
            with np.errstate(invalid="ignore", divide="ignore"):
                below = np.sum(sc < lc, axis=0)
                ins[cens] = np.where(
                    below > 0, np.sum((sc < lc) & (sc >= lo_b) & (sc <= hi_b), axis=0) / below, 0.0
                )
        row["inside"] = float(np.mean(ins))
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update(
        endpoint=endpoint,
        study=study,
        prediction_corrected=prediction_corrected,
        x=x,
        prob=prob,
        n_replicates=int(ppc.sizes["replicate"]),
    )
    return out


def vpc_coverage(table: pd.DataFrame) -> float:
    """Fraction of all observations of a VPC table inside the simulated 5–95% band."""
    n = table["n_obs"].to_numpy()
    return float(np.sum(table["inside"].to_numpy() * n) / max(n.sum(), 1))


def _studies_with(ppc, endpoint) -> list[str]:
    ep = np.asarray(ppc["endpoint"].values).astype(str)
    st = np.asarray(ppc["study"].values).astype(str)
    seen = []
    for s in st[ep == endpoint]:
        if s not in seen:
            seen.append(s)
    return seen


def vpc(
    fit,
    endpoint: str,
    *,
    by_study: bool = True,
    prediction_corrected: bool = False,
    x: str = "auto",
    n_bins: int = 8,
    prob: float = 0.90,
    log_y: bool | None = None,
    show_points: bool = True,
    ppc=None,
    **ppc_options,
):
    """VPC (or pcVPC) of one endpoint: a column per study, BLQ fractions underneath.

    Parameters
    ----------
    fit : arviz.InferenceData or path
    endpoint : str
    by_study : bool
        One panel per study with observations of the endpoint (default), or all together.
    prediction_corrected, x, n_bins, prob, ppc, ppc_options
        As in :func:`vpc_table`.
    log_y : bool, optional
        Log concentration axis (default: when the values span more than a factor 30).
    show_points : bool
        Draw the observations (BLQ ones as crosses at the LLOQ).

    Returns
    -------
    matplotlib.figure.Figure
        Lines: observed 5th, 50th (solid) and 95th (dashed) percentiles; bands: the ``prob``
        interval of the same percentiles over replicates (median band red, outer bands blue);
        dotted line: LLOQ. Lower row (when the endpoint has an LLOQ): fraction BLQ observed
        (points) against simulated (band).
    """
    idata = as_fit(fit)
    ppc = _get_ppc(idata, ppc, **ppc_options)
    studies = _studies_with(ppc, endpoint) if by_study else [None]
    if x == "auto":
        x = choose_x(ppc, endpoint)
    if not studies:
        raise ValueError(f"endpoint {endpoint!r} has no observations in the fit")
    tables = [
        vpc_table(
            idata,
            endpoint,
            study=s,
            prediction_corrected=prediction_corrected,
            x=x,
            n_bins=n_bins,
            prob=prob,
            ppc=ppc,
        )
        for s in studies
    ]
    has_lloq = any(np.isfinite(t["lloq"]).any() for t in tables)
    fig, axs = _vpc_axes(len(studies), has_lloq)
    unit = endpoint_units(idata).get(endpoint, "")
    ep = np.asarray(ppc["endpoint"].values).astype(str)
    st = np.asarray(ppc["study"].values).astype(str)
    xs = np.asarray(ppc[x].values, dtype=float)
    dv = np.asarray(ppc["dv"].values, dtype=float)
    blq = np.asarray(ppc["blq"].values, dtype=bool)
    lloq = np.asarray(ppc["lloq"].values, dtype=float)
    pred = np.asarray(ppc["pred"].values, dtype=float)
    em = json.loads(ppc.attrs.get("error_models", "{}")).get(endpoint, "proportional")
    if log_y is None:
        log_y = positive_log_scale(dv[(ep == endpoint) & ~blq])
    kind = "pcVPC" if prediction_corrected else "VPC"
    for j, (s, t) in enumerate(zip(studies, tables, strict=True)):
        ax = axs[0, j]
        xm = t["x_mid"].to_numpy()
        for q, colour, alpha in (
            (5, "tab:blue", 0.25),
            (50, "tab:red", 0.25),
            (95, "tab:blue", 0.25),
        ):
            ax.fill_between(
                xm, t[f"sim_p{q}_lo"], t[f"sim_p{q}_hi"], color=colour, alpha=alpha, lw=0,
                label=(f"simulated {'p50' if q == 50 else 'p5, p95'}, {100 * prob:g}% interval"
                       if j == 0 and q != 95 else None),
            )  # fmt: skip
        ax.plot(xm, t["obs_p50"], "-", color="k", lw=1.6, label="observed p50" if j == 0 else None)
        ax.plot(
            xm, t["obs_p5"], "--", color="k", lw=1.1, label="observed p5, p95" if j == 0 else None
        )
        ax.plot(xm, t["obs_p95"], "--", color="k", lw=1.1)
        if show_points:
            m = (ep == endpoint) & (st == s if s is not None else True)
            yv = dv[m]
            if prediction_corrected:
                edges = np.concatenate([t["x_lo"].to_numpy()[:1], t["x_hi"].to_numpy()])
                which = np.clip(np.digitize(xs[m], edges[1:-1]), 0, len(edges) - 2)
                pb = np.array([np.nanmedian(pred[m][which == b]) for b in range(len(edges) - 1)])
                yv = _pc(yv, pred[m], pb[which], em)
            ax.plot(xs[m][~blq[m]], yv[~blq[m]], "o", ms=2.2, color="0.45", alpha=0.5, zorder=0)
            if blq[m].any() and not prediction_corrected:
                ax.plot(xs[m][blq[m]], lloq[m][blq[m]], "x", ms=3, color="tab:orange", alpha=0.7,
                        zorder=0, label="BLQ (at LLOQ)" if j == 0 else None)  # fmt: skip
        if np.isfinite(t["lloq"]).any() and not prediction_corrected:
            ax.axhline(np.nanmedian(t["lloq"]), ls=":", color="tab:orange", lw=1.2)
        if log_y:
            ax.set_yscale("log")
            # bands of replicates can reach far below the data (log scale): keep the data's range
            m = (ep == endpoint) & (st == s if s is not None else True) & ~blq
            ref = np.concatenate([dv[m], lloq[(ep == endpoint) & np.isfinite(lloq)]])
            ref = ref[np.isfinite(ref) & (ref > 0)]
            if ref.size:
                ax.set_ylim(bottom=max(ax.get_ylim()[0], 0.3 * float(ref.min())))
        title = f"{kind} {endpoint}" + (f", study {s}" if s is not None else "")
        ax.set_title(plain_text(title), fontsize=10)
        ax.set_ylabel(f"{endpoint} ({unit})" if unit else endpoint)
        if not has_lloq:
            ax.set_xlabel("time after dose (h)" if x == "tad" else "time (h)")
        if has_lloq:
            bx = axs[1, j]
            bx.fill_between(xm, t["blq_sim_lo"], t["blq_sim_hi"], color="tab:orange", alpha=0.3,
                            lw=0, label=f"simulated, {100 * prob:g}% interval")  # fmt: skip
            bx.plot(xm, t["blq_sim_med"], "-", color="tab:orange", lw=1)
            bx.plot(xm, t["blq_obs"], "o-", color="k", ms=3, lw=1, label="observed")
            bx.set_ylim(
                -0.02, max(0.2, float(np.nanmax(t[["blq_obs", "blq_sim_hi"]].values)) + 0.05)
            )
            bx.set_ylabel("fraction BLQ")
            bx.set_xlabel("time after dose (h)" if x == "tad" else "time (h)")
            if j == 0:
                bx.legend(fontsize=7, loc="upper right")
    axs[0, 0].legend(fontsize=7, loc="best")
    n_rep = int(ppc.sizes["replicate"])
    fig.suptitle(
        f"{kind} of {endpoint}: {n_rep} replicates of the trial with new subjects", fontsize=11
    )
    return fig


def _vpc_axes(ncols: int, has_lloq: bool):
    from matplotlib.figure import Figure

    fig = Figure(
        figsize=(min(max(4.2 * ncols, 6.5), 17), 4.0 + (1.8 if has_lloq else 0)),
        layout="constrained",
    )
    if has_lloq:
        axs = fig.subplots(
            2, ncols, squeeze=False, gridspec_kw={"height_ratios": [3, 1]}, sharex="col"
        )
    else:
        axs = fig.subplots(1, ncols, squeeze=False)
    return fig, axs
