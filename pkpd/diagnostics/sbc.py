"""Pictures and tables of a simulation-based calibration (:func:`pkpd.sbc`).

* :func:`sbc_table`: per quantity, the verdict, the ECDF test's p-value, the rank histogram's
  chi-square p-value, the mean rank (``L/2`` when calibrated), how often the truth was inside
  the central 90% of the draws, and the median bulk ESS of the replicates.
* :func:`sbc_ecdf`: the ECDF difference plot the SBC R package draws: the ranks' ECDF minus
  the uniform CDF, inside the simultaneous band of :mod:`pkpd.inference.calibration`. A
  ∩-shape: ranks pile up in the middle (the posterior is too wide); ∪ or an S: at the ends
  (too narrow, or biased); a line drifting up or down: biased one way.
* :func:`sbc_ranks`: rank histograms with the 99% range of a bin's count under uniformity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from pkpd.diagnostics._common import panel_grid, plain_text


def _as_sbc(result):
    from pkpd.inference.sbc import load_sbc

    return result if hasattr(result, "data_vars") else load_sbc(result)


def sbc_table(result) -> pd.DataFrame:
    """One row per quantity of an SBC result (or its file)."""
    r = _as_sbc(result)
    n_ranks = int(r.attrs["ranks"]) + 1
    rank = r["rank"]
    central = ((rank >= 0.05 * n_ranks) & (rank < 0.95 * n_ranks)).mean("replicate")
    return pd.DataFrame(
        {
            "quantity": [str(q) for q in r["quantity"].values],
            "verdict": [str(v) for v in r["verdict"].values],
            "ECDF p-value": r["p_value"].values,
            "chi-square p-value": r["chi_square_p_value"].values,
            "mean rank": rank.mean("replicate").values,
            "expected mean rank": (n_ranks - 1) / 2,
            "truth in central 90%": central.values,
            "median ESS": r["ess_bulk"].median("replicate").values,
        }
    )


def sbc_ecdf(result, *, quantities=None, ncols: int = 4):
    """ECDF difference plots with the simultaneous band, one panel per quantity."""
    r = _as_sbc(result)
    names = [str(q) for q in r["quantity"].values] if quantities is None else list(quantities)
    n_ranks = int(r.attrs["ranks"]) + 1
    z = r["band_z"].values
    fig, panels = panel_grid(len(names), ncols, 2.6, 2.1)
    for ax, q in zip(panels, names, strict=True):
        ranks = r["rank"].sel(quantity=q).values
        # the ECDF as a step function at every whole rank, minus the uniform CDF
        grid = np.arange(n_ranks + 1)
        f = (ranks[:, None] < grid).mean(0)
        ax.fill_between(z, r["band_lower"] - z, r["band_upper"] - z, color="#cfd8e3",
                        step="mid", label="simultaneous 95% band")  # fmt: skip
        ax.step(grid / n_ranks, f - grid / n_ranks, where="post", color="#1f4e79", lw=1.2)
        ax.axhline(0.0, color="#777", lw=0.6)
        verdict = str(r["verdict"].sel(quantity=q).values)
        colour = "#b22222" if verdict == "suspicious" else "#1d1d1f"
        ax.set_title(
            f"{plain_text(q)}\n{verdict}, p={float(r['p_value'].sel(quantity=q)):.3g}",
            fontsize=8,
            color=colour,
        )
        ax.set_xlabel("fractional rank", fontsize=7)
        ax.set_ylabel("ECDF − uniform", fontsize=7)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"SBC: {r.sizes['replicate']} replicates, ranks 0..{n_ranks - 1}", fontsize=9)
    return fig


def sbc_ranks(result, *, quantities=None, bins: int | None = None, ncols: int = 4):
    """Rank histograms, the grey band the central 99% of a bin's count under uniformity."""
    r = _as_sbc(result)
    names = [str(q) for q in r["quantity"].values] if quantities is None else list(quantities)
    n_ranks = int(r.attrs["ranks"]) + 1
    n = r.sizes["replicate"]
    bins = bins or int(np.clip(n // 5, 2, 20))
    edges = np.round(np.linspace(0, n_ranks, bins + 1)).astype(int)
    fig, panels = panel_grid(len(names), ncols, 2.6, 2.0)
    for ax, q in zip(panels, names, strict=True):
        counts = np.histogram(r["rank"].sel(quantity=q).values, bins=edges)[0]
        p = np.diff(edges) / n_ranks
        lo, hi = stats.binom.ppf(0.005, n, p), stats.binom.ppf(0.995, n, p)
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4a7fb0")
        ax.fill_between(edges, np.r_[lo, lo[-1]], np.r_[hi, hi[-1]], step="post",
                        color="#999", alpha=0.3)  # fmt: skip
        ax.set_title(plain_text(q), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("rank", fontsize=7)
    return fig
