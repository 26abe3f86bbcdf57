"""Prior against posterior of every population-level quantity.

The priors are the fit's own (as parsed when it ran, :func:`pkpd.inference.posterior.
restore_priors`). Every population quantity has an independent prior in the model, so its
marginal prior is the prior distribution itself: densities are exact and draws come from it
directly (no pass through the structural model, which for ODE endpoints would cost seconds).
"""

from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from pkpd.diagnostics._common import as_fit, new_figure, panel_grid
from pkpd.diagnostics.tables import population_variables

_SIGMA = {"additive": "add", "proportional": "prop", "sd_log": "log", "sd_logit": "logit"}


def prior_distributions(fit) -> dict[str, tuple[object, float]]:
    """Variable name → (prior :class:`~pkpd.inference.priors.Dist`, multiplier).

    The variable is ``multiplier`` x a draw of the distribution (100 for percentages whose
    prior is on the fraction scale, 1 otherwise). Fixed quantities are left out.
    """
    from pkpd.inference.posterior import restore_priors
    from pkpd.inference.priors import Dist

    idata = as_fit(fit)
    pri = restore_priors(idata)
    out = {}
    for p, pp in pri.parameters.items():
        if not pp.prior.is_fixed:
            out[f"pop_{p}"] = (pp.prior, pp.multiplier)
        if pp.bsv is not None:
            out[f"omega_{p}"] = (pp.bsv, 1.0)
        if pp.bsv_study is not None:
            out[f"omega_study_{p}"] = (pp.bsv_study, 1.0)
        if pp.iov is not None:
            out[f"omega_iov_{p}"] = (pp.iov, 1.0)
    for eff in json.loads(idata.attrs.get("covariate_effects_detail", "[]")):
        prior = dict(eff["prior"])
        fam = prior.pop("family")
        if fam != "fixed":
            out[f"beta_{eff['name']}"] = (Dist(fam, prior), 1.0)
    for e, r in pri.residuals.items():
        for term, short in _SIGMA.items():
            if term in r.terms and not r.terms[term].is_fixed:
                out[f"sigma_{short}_{e}"] = (r.terms[term], 1.0)
    post = idata.posterior
    return {k: v for k, v in out.items() if k in post}


def prior_samples(fit, *, n: int = 4000, seed: int = 0) -> dict[str, np.ndarray]:
    """``n`` prior draws of every population quantity that has a prior (see module docstring)."""
    dists = prior_distributions(fit)
    keys = jax.random.split(jax.random.PRNGKey(seed), max(len(dists), 1))
    return {
        name: np.asarray(d.numpyro().sample(k, (n,))) * mult
        for k, (name, (d, mult)) in zip(keys, dists.items(), strict=False)
    }


def prior_posterior_table(fit, *, prob: float = 0.90, n: int = 4000, seed: int = 0):
    """Prior and posterior median and interval of each quantity, and how much the data taught.

    Returns
    -------
    pandas.DataFrame
        Indexed by variable: ``prior_median``, ``prior_lo``, ``prior_hi``, ``post_median``,
        ``post_lo``, ``post_hi`` and ``sd_ratio`` (posterior SD / prior SD: near 1, the data say
        little about the quantity; near 0, they determine it).
    """
    idata = as_fit(fit)
    draws = prior_samples(idata, n=n, seed=seed)
    lo, hi = (1 - prob) / 2, 1 - (1 - prob) / 2
    rows = []
    for v in population_variables(idata):
        if v not in draws:
            continue
        pr = draws[v]
        po = np.asarray(idata.posterior[v].values, dtype=float).reshape(-1)
        rows.append(
            {
                "parameter": v,
                "prior_median": float(np.median(pr)),
                "prior_lo": float(np.quantile(pr, lo)),
                "prior_hi": float(np.quantile(pr, hi)),
                "post_median": float(np.median(po)),
                "post_lo": float(np.quantile(po, lo)),
                "post_hi": float(np.quantile(po, hi)),
                "sd_ratio": float(np.std(po) / np.std(pr)) if np.std(pr) > 0 else np.nan,
            }
        )
    return pd.DataFrame(rows).set_index("parameter")


def prior_posterior(fit, *, variables=None, ncols: int = 4, n: int = 4000, seed: int = 0):
    """Posterior histogram and prior density of each population quantity (a panel each).

    Parameters
    ----------
    fit : arviz.InferenceData or path
    variables : sequence of str, optional
        Posterior variable names (default: every population quantity with a prior).
    ncols : int
        Panels per row.

    Returns
    -------
    matplotlib.figure.Figure
    """
    idata = as_fit(fit)
    dists = prior_distributions(idata)
    names = [v for v in population_variables(idata) if v in dists]
    if variables is not None:
        unknown = [v for v in variables if v not in dists]
        if unknown:
            raise ValueError(f"no prior for {unknown}; choose among {names}")
        names = list(variables)
    if not names:
        fig, axs = new_figure(4, 1.5)
        axs[0, 0].text(0.5, 0.5, "no estimated population quantity", ha="center")
        axs[0, 0].set_axis_off()
        return fig
    from matplotlib.ticker import NullFormatter

    draws = prior_samples(idata, n=n, seed=seed)
    fig, panels = panel_grid(len(names), ncols, 3.2, 2.4)
    for ax, v in zip(panels, names, strict=True):
        po = np.asarray(idata.posterior[v].values, dtype=float).reshape(-1)
        pr = draws[v]
        lo = min(np.quantile(po, 0.005), np.quantile(pr, 0.05))
        hi = max(np.quantile(po, 0.995), np.quantile(pr, 0.95))
        if lo == hi:
            lo, hi = lo - 1, hi + 1
        d, mult = dists[v]
        if d.family in ("halfnormal", "halfcauchy", "exponential"):
            lo = 0.0
        # a positive quantity whose plotted range spans decades: log axis, densities per log unit
        log_x = d.family == "lognormal" and lo > 0 and hi / lo > 30
        if log_x:
            edges = np.linspace(np.log(lo), np.log(hi), 41)
            heights, _ = np.histogram(np.log(po), bins=edges, density=True)
            ax.stairs(heights, np.exp(edges), fill=True, color="tab:blue", alpha=0.55,
                      label="posterior")  # fmt: skip
            grid = np.geomspace(lo, hi, 300)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.hist(po, bins=40, range=(lo, hi), density=True, color="tab:blue", alpha=0.55,
                    label="posterior")  # fmt: skip
            grid = np.linspace(lo, hi, 300)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # grid points outside the support
            dens = np.exp(np.asarray(d.numpyro().log_prob(jnp.asarray(grid / mult)))) / mult
        if log_x:
            dens = dens * grid
        ax.plot(grid, np.where(np.isfinite(dens), dens, 0.0), "-", color="tab:red", lw=1.3,
                label="prior")  # fmt: skip
        unit = idata.posterior[v].attrs.get("units", "")
        ax.set_title(v + (f" ({unit})" if unit else ""), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_yticks([])
    panels[0].legend(fontsize=7)
    fig.suptitle(
        "Prior (line) and posterior (histogram); log axes show densities per log unit",
        fontsize=11,
    )
    return fig
