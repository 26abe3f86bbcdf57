"""Posterior predictive dose simulation: regimens × virtual subjects × posterior draws.

>>> import pkpd
>>> sim = pkpd.simulate("fit.nc", ["25 mg q1w x12 over 30 min",
...                                 "175 mg q1w x3 then 75 mg q1w x9 over 30 min"],
...                     n_subjects=1000, n_draws=200, seed=1)          # doctest: +SKIP
>>> pkpd.attainment(sim, "s6k_inhibition_trough_ss >= 80")             # doctest: +SKIP
>>> pkpd.save_simulation(sim, "sim.nc", targets=["auc_tau_sirolimus_ss <= 3000"])  # doctest: +SKIP

What is simulated
-----------------
For each selected posterior draw (evenly spaced over the chains) and each virtual subject, the
individual parameters follow the fit's hierarchy exactly
(:func:`pkpd.inference.hierarchy.individual_parameters`): population value, covariate effects of the
subject's covariates, a study effect (``study=None``: none, the typical study; ``"new"``: one new
study effect per draw, drawn from ``N(0, omega_study)``; a fitted study's name: that study's
estimated effect), and a new subject effect ``eta ~ N(0, omega)`` (with the fitted correlation
when the fit has one). The same virtual subjects (covariates and random effects) take every
regimen, so regimens are compared on the same patients. Profiles and metrics are individual
predictions: no residual (assay) error is added.

``typical=True`` simulates the *typical subject* instead (the "typical value" simulation of
NONMEM and Pumas): one subject whose covariates are the covariate effects' references (power,
linear and exponential effects: their ``reference``; categorical flags: 0; so every covariate
multiplier is 1) and the fitted data's median for other covariates, unless ``population`` is
given; every subject effect ``eta`` is 0 and, unless ``study`` says otherwise, there is no study
effect. Across draws the profile then shows parameter uncertainty only (typical value ±
uncertainty). ``n_subjects`` must be ``None`` or 1; the output has attribute ``typical=1``.

Output contract (``xarray.Dataset``)
------------------------------------
Coordinates
    ``regimen`` (the regimen strings as given, or the labels of a mapping), ``draw`` (0..n-1),
    ``subject`` (0..n-1), ``time`` (h from the first dose).
Endpoint profiles, dims ``(regimen, draw, subject, time)``, attrs ``units``
    named as the model's endpoints: ``temsirolimus``, ``sirolimus`` (ng/mL), ``s6k`` (% of the
    subject's baseline phosphorylation), ``vegf`` (pg/mL), ``pd1_cd8`` (% PD-1+ of CD8+ T
    cells); ``conc`` (ng/mL) for the generic models. At a dose time the value is after the dose.
Per-subject metrics, dims ``(regimen, draw, subject)``, attrs ``units`` and ``long_name``
    For each concentration ``X`` in ``temsirolimus``, ``sirolimus``, ``total`` (the molar sum
    ``1000·C_tem/1030.3 + 1000·C_sir/914.2``, **nmol/L**) or ``conc``, and each interval
    ``W`` in ``c1`` (cycle 1: the first dosing interval) and ``ss`` (steady state: the last
    full dosing interval inside the horizon; with the default horizon, the interval after the
    last dose, e.g. week 12 of a 12-week weekly regimen):

    * ``cmax_X_W`` (ng/mL; nmol/L), the maximum over the interval;
    * ``ctrough_X_W``, at the end of the interval, before the next dose;
    * ``auc_tau_X_W`` (ng*h/mL; nmol*h/L), the integral over the interval.

    PD: ``s6k_inhibition_trough_c1`` / ``_ss`` (%, ``100 − S6K`` where S6K is % of the subject's
    baseline, at the end of the interval); ``vegf_change_pct`` (%, ``100·(VEGF(t)/VEGF(0) − 1)``
    at the horizon, attribute ``time_h``); ``pd1_change_week8`` (**percentage points**,
    ``PD1(1344 h) − PD1(0)``; present when the horizon reaches week 8).
Covariates and parameters
    ``cov_<NAME>`` dims ``(subject)``: the virtual subjects' covariates (fixed across draws and
    regimens); ``param_<p>`` dims ``(draw, subject)``: their individual parameter values
    (canonical units, attribute ``units``), the same for every regimen.
Bookkeeping
    ``regimen_text`` (regimen, the regimen as read, written out with every phase's route and
    infusion time), ``regimen_description`` (regimen, its dose table in words:
    :meth:`pkpd.Regimen.describe`), ``interval_c1_start_h``,
    ``interval_c1_end_h``, ``interval_ss_start_h``, ``interval_ss_end_h`` (regimen, h),
    ``posterior_index`` (draw: the draw's index in the fit's flattened posterior),
    ``solve_ok`` (regimen, draw, subject: 0 where a solve failed and the values are NaN).
Attributes
    ``pkpd_simulation=1``, ``pkpd_version``, ``created``, ``seed``, ``model``, ``endpoints``,
    ``fit_data_sha256``, ``fit_data_source``, ``fit_created``, ``fit_method``, ``fit_seed``,
    ``fit_posterior_draws``, ``study``, ``regimens`` and ``regimen_labels`` (JSON lists),
    ``horizon_h``, ``n_draws``, ``n_subjects``, ``population`` (how the covariates were made),
    ``typical`` (1 for a typical-subject simulation, else 0),
    ``engine``, ``failed_solves``, ``residual_error``, ``steady_state``, ``cycle1``,
    ``time_points``; in a file written with targets (:func:`save_simulation`), ``targets``
    (JSON list).

Computation
-----------
(draw, subject) pairs are processed in batches of ``chunk_size`` per device (memory bounded by it
and by the stored profiles, ``regimens × draws × subjects × times × endpoints × 8`` bytes; pass
``times=[]`` to keep metrics only). The batches of one call are split over all JAX devices by
:func:`jax.shard_map` on a one-axis mesh; each pair's random effects come from its own key
(``fold_in(fold_in(key, draw), subject)``) and every device runs the same program on batches of
the same shape, so the step-by-step engine gives bit-identical results on 1 or n devices (the
``model.predict`` engine agrees to rounding, ~1e-15) and another ``chunk_size`` changes results
only by rounding. On CPU, several host devices (``XLA_FLAGS=--xla_force_host_platform_device_count
=N`` before JAX starts; ``pkpd simulate --devices N``) use several cores. Engines and their
accuracy: :mod:`pkpd.simulate.engines`; grids and interval definitions: :mod:`pkpd.simulate.plan`.
Because ``pkpd.simulate`` is the function once ``pkpd`` is imported, import the module's other
names with ``from pkpd.simulate import ...`` (``pkpd.simulate.attainment`` etc. also work).
"""

from pkpd.simulate.core import simulate
from pkpd.simulate.errors import SimulationError
from pkpd.simulate.io import load_simulation, save_simulation
from pkpd.simulate.population import build_population, parse_distribution
from pkpd.simulate.synthetic import fit_from_values
from pkpd.simulate.targets import attainment, format_attainment, parse_target, summarize

# ``pkpd.simulate`` is this function once the package is imported as ``pkpd``; these attributes
# keep the module's other functions reachable as ``pkpd.simulate.attainment`` etc.
simulate.attainment = attainment
simulate.summarize = summarize
simulate.save_simulation = save_simulation
simulate.load_simulation = load_simulation
simulate.SimulationError = SimulationError

__all__ = [
    "SimulationError",
    "attainment",
    "build_population",
    "fit_from_values",
    "format_attainment",
    "load_simulation",
    "parse_distribution",
    "parse_target",
    "save_simulation",
    "simulate",
    "summarize",
]
