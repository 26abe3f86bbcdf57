"""Diagnostics of fits and simulations: tables (DataFrames) and figures (matplotlib).

Every function takes the fit (an InferenceData from :func:`pkpd.fit` or the path of a fit
file) or the simulation first and keyword options after; figures are
:class:`matplotlib.figure.Figure` objects made outside pyplot (never shown, drawn by Agg when
saved). The expensive part of VPCs and NPDE, the replicates of the trial, is computed once by
:func:`posterior_predictive` and passed to the plots with ``ppc=``.

Examples
--------
>>> import pkpd
>>> from pkpd import diagnostics as dx
>>> fit = pkpd.load_fit("fit.nc")                          # doctest: +SKIP
>>> dx.parameter_table(fit)                                # doctest: +SKIP
>>> ppc = dx.posterior_predictive(fit, n_replicates=200)   # doctest: +SKIP
>>> dx.vpc(fit, "temsirolimus", ppc=ppc).savefig("vpc.png")  # doctest: +SKIP
"""

from pkpd.diagnostics.aggregate import aggregate_plot, aggregate_table
from pkpd.diagnostics.gof import gof, individual_fits, npde_summary
from pkpd.diagnostics.predictive import npde, posterior_predictive
from pkpd.diagnostics.prior_posterior import (
    prior_posterior,
    prior_posterior_table,
    prior_samples,
)
from pkpd.diagnostics.sbc import sbc_ecdf, sbc_ranks, sbc_table
from pkpd.diagnostics.simulation import (
    attainment_table,
    exposure_by_regimen,
    exposure_response,
    exposure_table,
    regimen_profiles,
    target_attainment,
)
from pkpd.diagnostics.tables import (
    convergence_messages,
    convergence_table,
    correlations,
    cv_percent,
    data_table,
    parameter_table,
    sampler_table,
    shrinkage,
)
from pkpd.diagnostics.vpc import vpc, vpc_coverage, vpc_table

__all__ = [
    "aggregate_plot",
    "aggregate_table",
    "attainment_table",
    "convergence_messages",
    "convergence_table",
    "correlations",
    "cv_percent",
    "data_table",
    "exposure_by_regimen",
    "exposure_response",
    "exposure_table",
    "gof",
    "individual_fits",
    "npde",
    "npde_summary",
    "parameter_table",
    "posterior_predictive",
    "prior_posterior",
    "prior_posterior_table",
    "prior_samples",
    "regimen_profiles",
    "sampler_table",
    "sbc_ecdf",
    "sbc_ranks",
    "sbc_table",
    "shrinkage",
    "target_attainment",
    "vpc",
    "vpc_coverage",
    "vpc_table",
]
