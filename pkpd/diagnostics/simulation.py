"""Plots and tables of a dose simulation (:func:`pkpd.simulate`): dose → exposure → response.

A simulation is an :class:`xarray.Dataset` with coordinates ``regimen``, ``draw``, ``subject``
and ``time`` (h); one variable per endpoint with dimensions ``(regimen, draw, subject, time)``;
per-subject metrics (``cmax_temsirolimus_c1``, ``auc_tau_sirolimus_ss``,
``s6k_inhibition_trough_ss``, ...) with dimensions ``(regimen, draw, subject)``; covariates
``cov_<NAME>``; ``units`` and ``long_name`` attributes. Variability shown over ``draw`` and
``subject`` together is the spread of a patient population (parameter uncertainty and
between-subject variability); over ``draw`` alone, the uncertainty of a population summary.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pkpd.diagnostics._common import (
    colour_map,
    new_figure,
    panel_grid,
    plain_text,
    positive_log_scale,
)


def as_simulation(sim):
    """An xarray Dataset from a simulation or the path of a simulation file."""
    import xarray as xr

    if isinstance(sim, xr.Dataset):
        return sim
    from pkpd.simulate import load_simulation

    return load_simulation(sim)


def endpoint_variables(sim) -> list[str]:
    """Variables with a time course: ``(regimen, draw, subject, time)``."""
    return [
        v
        for v in sim.data_vars
        if {"regimen", "time"} <= set(sim[v].dims) and not v.startswith("cov_")
    ]


def metric_variables(sim) -> list[str]:
    """Per-subject metrics: ``(regimen, draw, subject)`` (as :func:`pkpd.simulate.attainment`
    sees them)."""
    from pkpd.simulate.targets import metric_names

    return [m for m in metric_names(sim) if not m.startswith("cov_")]


def _label(sim, v) -> str:
    """Short axis label: the variable's name and unit (``long_name`` is for tables)."""
    unit = sim[v].attrs.get("units", "")
    return f"{v} ({unit})" if unit else v


def key_metrics(sim) -> list[str]:
    """The metrics shown by default: all when there are few, else steady-state ones and changes
    from baseline (plus cycle-1 Cmax of the parent drug)."""
    metrics = metric_variables(sim)
    if len(metrics) <= 9:
        return metrics
    keep = [m for m in metrics if m.endswith("_ss") or "change" in m]
    first = [m for m in metrics if m.startswith("cmax_") and m.endswith("_c1")][:1]
    return first + [m for m in keep if not m.startswith("cmax_total")]


def _regimens(sim) -> list[str]:
    return [str(r) for r in np.asarray(sim["regimen"].values)]


def exposure_table(sim, *, metrics=None, prob: float = 0.90) -> pd.DataFrame:
    """Median and ``prob`` interval of each metric by regimen, over draws and subjects pooled.

    The numbers of :func:`pkpd.simulate.summarize`, indexed for display.

    Returns
    -------
    pandas.DataFrame
        Index ``(regimen, metric)``; columns ``units``, ``median``, ``low``, ``high``, ``mean``,
        ``n``, ``long_name``.
    """
    from pkpd.simulate import summarize

    sim = as_simulation(sim)
    tab = summarize(sim, ci=prob)
    if metrics is not None:
        tab = tab[tab["metric"].isin(list(metrics))]
    return tab.set_index(["regimen", "metric"])


def attainment_table(sim, targets, *, prob: float = 0.90) -> pd.DataFrame:
    """Probability of reaching each target by regimen: :func:`pkpd.simulate.attainment`.

    For every regimen and posterior draw the probability is the fraction of simulated subjects
    meeting the target; the table gives its median and ``prob`` interval over draws, ranked.

    Returns
    -------
    pandas.DataFrame
        Columns ``target``, ``rank``, ``regimen``, ``regimen_text``, ``probability``,
        ``ci_low``, ``ci_high``, ``mean``, ``n_draws``, ``n_subjects``.
    """
    from pkpd.simulate import attainment

    return attainment(as_simulation(sim), targets, ci=prob)


def regimen_profiles(sim, *, endpoints=None, prob: float = 0.90, log_y: bool | None = None):
    """Median and ``prob`` prediction interval over time of each endpoint, a line per regimen.

    Returns
    -------
    matplotlib.figure.Figure
        A panel per endpoint; bands span draws and subjects together (a patient population).
    """
    sim = as_simulation(sim)
    endpoints = endpoint_variables(sim) if endpoints is None else list(endpoints)
    if not endpoints:
        raise ValueError("the simulation has no endpoint time courses")
    regs = _regimens(sim)
    colours = colour_map(regs)
    fig, panels = panel_grid(len(endpoints), 2, 6.2, 3.6)
    t = np.asarray(sim["time"].values, dtype=float)
    lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
    for ax, v in zip(panels, endpoints, strict=True):
        allv = []
        for r in regs:
            x = sim[v].sel(regimen=r).transpose("draw", "subject", "time").values.astype(float)
            x = x.reshape(-1, x.shape[-1])
            with np.errstate(invalid="ignore"):
                q = np.nanquantile(x, [lo, 0.5, hi], axis=0)
            ax.fill_between(t, q[0], q[2], color=colours[r], alpha=0.18, lw=0)
            ax.plot(t, q[1], "-", color=colours[r], lw=1.4, label=plain_text(r))
            allv.append(q[1])
        pos = np.concatenate(allv)
        ly = positive_log_scale(pos[pos > 0]) if log_y is None else log_y
        if ly:
            ax.set_yscale("log")
        unit = sim[v].attrs.get("units", "")
        ax.set_ylabel(f"{v} ({unit})" if unit else v)
        ax.set_xlabel("time (h)")
        ax.set_title(v, fontsize=10)
    panels[0].legend(fontsize=7, title="regimen", title_fontsize=7)
    fig.suptitle(f"Simulated time courses: median and {100 * prob:g}% prediction interval")
    return fig


def exposure_by_regimen(sim, *, metrics=None, prob: float = 0.90):
    """Distribution of each per-subject metric by regimen (box: quartiles; whiskers: ``prob``).

    ``metrics``: default :func:`key_metrics`.
    """
    sim = as_simulation(sim)
    metrics = key_metrics(sim) if metrics is None else list(metrics)
    if not metrics:
        raise ValueError("the simulation has no per-subject metrics")
    regs = _regimens(sim)
    colours = colour_map(regs)
    fig, panels = panel_grid(len(metrics), 3, 4.4, 3.4)
    w = 100 * (1 - prob) / 2
    for ax, v in zip(panels, metrics, strict=True):
        data = []
        for r in regs:
            x = np.asarray(sim[v].sel(regimen=r).values, dtype=float).reshape(-1)
            data.append(x[np.isfinite(x)])
        bp = ax.boxplot(data, whis=(w, 100 - w), showfliers=False, patch_artist=True,
                        widths=0.6)  # fmt: skip
        for patch, r in zip(bp["boxes"], regs, strict=True):
            patch.set_facecolor(colours[r])
            patch.set_alpha(0.5)
        ax.set_xticks(
            range(1, len(regs) + 1),
            [plain_text(r) for r in regs],
            rotation=20,
            ha="right",
            fontsize=7,
        )
        if positive_log_scale(np.concatenate([d for d in data if d.size] or [np.zeros(1)])):
            ax.set_yscale("log")
        ax.set_ylabel(sim[v].attrs.get("units", ""), fontsize=8)
        ax.set_title(v, fontsize=9)
    fig.suptitle(f"Exposure and response by regimen (whiskers: {100 * prob:g}% interval)")
    return fig


def exposure_response(sim, *, exposure: str, response: str, max_points: int = 3000, seed=0):
    """Per-subject response against exposure, coloured by regimen, with a running median.

    Parameters
    ----------
    exposure, response : str
        Metric names (e.g. ``"auc_tau_sirolimus_ss"``, ``"s6k_inhibition_trough_ss"``).
    max_points : int
        Points drawn per regimen (a random subset; the median uses all).
    """
    sim = as_simulation(sim)
    for v in (exposure, response):
        if v not in metric_variables(sim):
            raise ValueError(f"no metric {v!r}; the simulation has {metric_variables(sim)}")
    rng = np.random.default_rng(seed)
    regs = _regimens(sim)
    colours = colour_map(regs)
    fig, axs = new_figure(6.5, 4.6)
    ax = axs[0, 0]
    xs_all, ys_all = [], []
    for r in regs:
        x = np.asarray(sim[exposure].sel(regimen=r).values, dtype=float).reshape(-1)
        y = np.asarray(sim[response].sel(regimen=r).values, dtype=float).reshape(-1)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        xs_all.append(x)
        ys_all.append(y)
        k = rng.choice(x.size, min(max_points, x.size), replace=False) if x.size else []
        ax.plot(x[k], y[k], "o", ms=2.2, alpha=0.35, color=colours[r], label=plain_text(r))
    x, y = np.concatenate(xs_all), np.concatenate(ys_all)
    log_x = positive_log_scale(x)
    if x.size > 20:
        edges = np.quantile(np.log(x) if log_x else x, np.linspace(0, 1, 16))
        edges = np.exp(edges) if log_x else edges
        which = np.clip(np.digitize(x, edges[1:-1]), 0, len(edges) - 2)
        xm = [np.median(x[which == b]) for b in range(len(edges) - 1) if (which == b).any()]
        ym = [np.median(y[which == b]) for b in range(len(edges) - 1) if (which == b).any()]
        ax.plot(xm, ym, "-", color="k", lw=1.6, label="running median")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(_label(sim, exposure))
    ax.set_ylabel(_label(sim, response))
    ax.legend(fontsize=7, markerscale=2)
    ax.set_title(f"{response} vs {exposure}", fontsize=10)
    return fig


def target_attainment(sim, targets, *, prob: float = 0.90):
    """Probability of reaching each target by regimen (median, ``prob`` interval over draws).

    Parameters
    ----------
    targets : str or sequence of str
        E.g. ``"s6k_inhibition_trough_ss >= 80"``.
    """
    sim = as_simulation(sim)
    targets = [targets] if isinstance(targets, str) else list(targets)
    regs = _regimens(sim)
    colours = colour_map(regs)
    fig, axs = new_figure(4.8 * len(targets), 3.8, ncols=len(targets))
    table = attainment_table(sim, targets, prob=prob)
    for k, target in enumerate(targets):
        ax = axs[0, k]
        tab = table[table["target"] == target].set_index("regimen").reindex(regs)
        pos = np.arange(len(regs))
        p = tab["probability"].to_numpy()
        err = np.vstack([p - tab["ci_low"].to_numpy(), tab["ci_high"].to_numpy() - p])
        ax.bar(pos, p, color=[colours[r] for r in regs], alpha=0.7)
        ax.errorbar(pos, p, yerr=err, fmt="none", ecolor="k", capsize=4, lw=1)
        ax.set_xticks(pos, [plain_text(r) for r in regs], rotation=20, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("probability of target")
        ax.set_title(plain_text(target), fontsize=9)
    fig.suptitle(f"Target attainment: median and {100 * prob:g}% interval over posterior draws")
    return fig
