"""Helpers shared by the diagnostics: reading a fit, figures without pyplot, colours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

#: Colours of the studies / regimens (matplotlib's tab10, colour-blind friendlier order).
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def as_fit(fit):
    """An InferenceData from a fit object or the path of a fit file."""
    if isinstance(fit, (str, Path)):
        from pkpd.inference.fit import load_fit

        return load_fit(fit)
    if not hasattr(fit, "posterior"):
        raise TypeError(
            f"expected a pkpd fit (arviz.InferenceData from pkpd.fit) or the path of a fit file, "
            f"got {type(fit).__name__}"
        )
    return fit


def plain_text(text) -> str:
    """Text from the data (study names, subject IDs, regimen labels) as matplotlib shows it
    literally: ``$`` escaped (else ``$...$`` is parsed as mathtext, and bad TeX fails the
    figure) and a leading ``_`` kept visible (legends hide labels starting with ``_``)."""
    out = str(text).replace("$", r"\$")
    return " " + out if out.startswith("_") else out


def new_figure(width: float, height: float, *, nrows: int = 1, ncols: int = 1, **kw):
    """A matplotlib Figure and its axes, outside pyplot (no global state, never shown).

    Figures made this way are drawn by the Agg renderer when saved, whatever backend is
    active, and are garbage-collected like any object.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axs = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axs


def panel_grid(n: int, max_cols: int, panel_width: float, panel_height: float):
    """A figure of ``n`` panels in rows of at most ``max_cols``; grid cells beyond ``n`` are
    hidden. Returns ``(fig, panels)``, ``panels`` the ``n`` axes in reading order."""
    ncols = min(max_cols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axs = new_figure(panel_width * ncols, panel_height * nrows, nrows=nrows, ncols=ncols)
    cells = list(axs.ravel())
    for ax in cells[n:]:
        ax.set_visible(False)
    return fig, cells[:n]


def endpoint_units(idata) -> dict[str, str]:
    """Endpoint → unit, from the fit's observed data attributes."""
    raw = idata.observed_data["y"].attrs.get("units", "{}")
    try:
        return dict(json.loads(raw))
    except (TypeError, ValueError):
        return {}


def fit_endpoints(idata) -> list[str]:
    return list(json.loads(idata.attrs.get("endpoints", "[]")))


def colour_map(names) -> dict[str, str]:
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def positive_log_scale(values) -> bool:
    """Whether values span enough decades (and are positive) to be shown on a log axis."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0 or np.any(v <= 0):
        return False
    return float(np.quantile(v, 0.95) / max(np.quantile(v, 0.05), 1e-300)) > 30.0


def endpoint_rows(ppc, endpoint: str) -> np.ndarray:
    """Boolean mask of the observations of ``endpoint`` in a posterior-predictive table."""
    ep = np.asarray(ppc["endpoint"].values).astype(str)
    if endpoint not in set(ep):
        raise ValueError(f"endpoint {endpoint!r} was not fitted; the fit has {sorted(set(ep))}")
    return ep == endpoint
