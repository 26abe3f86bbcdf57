r"""Hierarchical Bayesian fits with NumPyro: population → study → subject (:func:`fit`).

The package ``pkpd.inference`` along its seams, each file one job:

* :mod:`~pkpd.inference.spec`: the model, data and priors checked and laid out
  (:class:`FitSpec`, :func:`prepare`);
* :mod:`~pkpd.inference.hierarchy`: the parameter equation and site names (module docstring
  there), shared with simulation and predictive checks;
* :mod:`~pkpd.inference.layout`: the subjects grouped and trimmed for prediction;
* :mod:`~pkpd.inference.model`: the NumPyro model (:func:`build_model`);
* :mod:`~pkpd.inference.geometry`: where NUTS starts and how it sees the posterior (per-subject
  centring, levelled IC50s, anchored study means, the initial mass matrix);
* this module: the orchestration (start, MAP, NUTS or the Laplace fit of
  :mod:`~pkpd.inference.laplace`, pointwise log-likelihood);
* :mod:`~pkpd.inference.output`: the InferenceData written and read (:func:`save_fit`,
  :func:`load_fit`).

Observations enter through :class:`pkpd.inference.likelihood.ResidualLikelihood` (error model
per endpoint, BLQ as M3). Endpoints without data contribute nothing; a failed ODE solve gives a
``-inf`` log density. The names imported here from the other modules are the ones code
outside the package has used from ``pkpd.inference.fit``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import sys
import time
import warnings
from collections.abc import Sequence

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from pkpd.inference.geometry import (  # noqa: F401
    FALLBACK_DIVERGENCE_FRACTION,
    FALLBACK_FUNNEL_SD,
    FALLBACK_MIN_WARMUP,
    _centered_start,
    _choose_anchors,
    _choose_centered,
    _choose_levels,
    _fallback_centered,
    _flat_index,
    _jittered_starts,
    _laplace_covariance,
)
from pkpd.inference.layout import _trim, _unique_points, observation_predictor  # noqa: F401
from pkpd.inference.likelihood import observed_values
from pkpd.inference.model import (  # noqa: F401
    _level_frame,
    _normal_on_transform,
    _sample,
    build_model,
)
from pkpd.inference.output import (  # noqa: F401
    FIT_MARKER,
    _data_sha256,
    _deterministic_sites,
    _population_sites,
    _site_names,
    _to_inference_data,
    check_saveable,
    load_fit,
    record_variables,
    save_fit,
)
from pkpd.inference.spec import (  # noqa: F401
    FitError,
    FitSpec,
    model_endpoints,
    model_options,
    prepare,
    resolve_model,
)


class _Objective:
    """The potential energy (negative log density) of a NumPyro model on the flat
    unconstrained scale, compiled once with its gradient.

    Finding a start, the MAP optimisation and the checks of the chain starts all call the same
    compiled function from the host, so the model is compiled once for all of them (each
    ``jax.jit`` of a function containing the model compiles the model again; NumPyro's own
    ``initialize_model`` evaluates the gradient eagerly, op by op: benchmarks/RESULTS.md,
    "Design measurements moved from docstrings").
    """

    def __init__(self, numpyro_model, obs, proto):
        from numpyro.infer.util import potential_energy

        _, unravel = jax.flatten_util.ravel_pytree(proto)
        self.unravel = unravel
        self.obs = obs

        def pe_of(x, obs):
            return potential_energy(numpyro_model, (), {"obs": obs}, unravel(x))

        self.pe = lambda x: pe_of(x, obs)
        # the observations are an argument, not a constant of the program: fits of other data
        # on the same design (simulation-based calibration) compile the same program, which
        # JAX's persistent cache then serves
        value_and_grad = jax.jit(jax.value_and_grad(pe_of))
        self.value_and_grad = lambda x: value_and_grad(x, self.obs)

    def __call__(self, x) -> tuple[float, np.ndarray]:
        v, g = self.value_and_grad(jnp.asarray(x, dtype=float))
        return float(v), np.asarray(g, dtype=float)

    def hvp(self, x, v, h: float = 1e-4) -> np.ndarray:
        """Hessian-vector product at ``x`` along ``v``: a central difference of the compiled
        gradient (two calls; no second compilation)."""
        return (self(x + h * v)[1] - self(x - h * v)[1]) / (2 * h)

    def usable(self, x) -> bool:
        """A finite potential energy and gradient at ``x``."""
        v, g = self(x)
        return bool(np.isfinite(v) and np.all(np.isfinite(g)))


def _init_function(numpyro_model, obs, strategy):
    """``key -> unconstrained values`` of the model's latent sites under an init strategy
    (compiled: the model runs once, abstractly, to find its sites)."""
    from numpyro.distributions.transforms import biject_to
    from numpyro.handlers import seed, substitute, trace

    def run(key, obs):
        tr = trace(substitute(seed(numpyro_model, key), substitute_fn=strategy)).get_trace(obs=obs)
        return {
            k: biject_to(v["fn"].support).inv(v["value"])
            for k, v in tr.items()
            if v["type"] == "sample" and not v["is_observed"]
        }

    compiled = jax.jit(run)
    return lambda key: compiled(key, obs)


def _valid_start(numpyro_model, obs, key):
    """A start with a finite log density and gradient, and the model's compiled objective.

    The prior medians first; where the model cannot be evaluated there (a solver failing, a
    prediction not finite), random points uniform in (-2, 2) on the unconstrained scale, as
    NumPyro's initialisation tries them. Returns ``(flat start, objective)``.
    """
    from numpyro.infer.initialization import init_to_median, init_to_uniform

    k_med, k_uni = jax.random.split(key)
    u = _init_function(numpyro_model, obs, init_to_median(num_samples=15))(k_med)
    objective = _Objective(numpyro_model, obs, u)
    x = jax.flatten_util.ravel_pytree(u)[0]
    if objective.usable(x):
        return np.asarray(x), objective
    uniform = _init_function(numpyro_model, obs, init_to_uniform(radius=2))
    for k in jax.random.split(k_uni, 100):
        x = jax.flatten_util.ravel_pytree(uniform(k))[0]
        if objective.usable(x):
            return np.asarray(x), objective
    raise FitError(
        "no starting point with a finite log density was found (the model fails or predicts "
        "non-finite values at the prior medians and at 100 random points); check the priors' "
        "medians and the data"
    )


def _map_estimate(objective: _Objective, x0, max_iter: int = 2000):
    """MAP point on the flat unconstrained scale: L-BFGS (scipy) from a valid start.

    Runs on the host around the compiled objective. Where the model cannot be evaluated the
    objective returns a huge value (the line search backs off); the best finite point seen
    is returned with its potential energy, so the result is never worse than the start.
    """
    from scipy.optimize import minimize

    huge = float(np.finfo(float).max) ** 0.5
    best = {"v": np.inf, "x": np.asarray(x0, dtype=float)}

    def fun(x):
        v, g = objective(x)
        if not (np.isfinite(v) and np.all(np.isfinite(g))):
            return huge, np.zeros_like(x)
        if v < best["v"]:
            best.update(v=v, x=np.array(x))
        return v, g

    minimize(
        fun,
        best["x"],
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": int(max_iter), "maxfun": 2 * int(max_iter)},
    )
    return best["x"], best["v"]


def fit(
    model,
    data,
    priors=None,
    *,
    chains: int = 4,
    warmup: int = 500,
    draws: int = 500,
    seed: int = 0,
    method: str = "nuts",
    covariates: Sequence[str] | None = None,
    endpoints: Sequence[str] | None = None,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    mass_matrix: str = "diagonal",
    map_steps: int = 2000,
    progress_bar: bool = True,
    parameterization: str = "auto",
    aggregate=None,
    aggregate_virtual: int | None = None,
    aggregate_seed: int | None = None,
):
    """Fit a population model to a dataset.

    Parameters
    ----------
    model : str or model object
        ``"one_cmt_oral"``, ``"temsirolimus"``, ... or a model object.
    data : Dataset, path, DataFrame or None
        ``None``: a fit of published summaries alone (``aggregate=``; the endpoints are those
        they summarise, the between-subject SDs are informed only by their spreads, and
        covariate effects without individual data are dropped and listed).
    priors : path, Priors or None
        ``None``: the model's bundled priors.
    chains, warmup, draws : int
        NUTS settings. Chains run in parallel when there are as many JAX devices (on CPU set
        ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before JAX starts; the CLI does);
        otherwise one after another in one compiled program on CPU (no progress bar), and
        vectorised on an accelerator (:func:`chain_method`).
    seed : int
        Seed of every random number used: the same seed gives the same draws.
    method : {"nuts", "map"}
        ``"map"``: a quick fit (:mod:`pkpd.inference.laplace`): the mode of the population
        values' posterior with the subject effects integrated out by a Laplace approximation
        per subject (FOCE-I/Laplacian-like), and ``draws`` draws (one chain) from the Laplace
        approximation around it, the subject effects from their conditional Gaussians; what
        was done is in the attributes (``map_kind``, ``map_converged``,
        ``laplace_flat_parameters``, ``laplace_prior_dominated``, ...).
    covariates : sequence of str, optional
        Covariate effects (names in the priors) to include; default every effect whose data
        column exists.
    endpoints : sequence of str, optional
        Endpoints to fit (default: every endpoint of the data the model predicts).
    parameterization : {"auto", "centered", "noncentered"}
        Of the subject effects in NUTS. Where the data inform each subject's value well (rich
        PK), the centred form (``T(θ_i) ~ Normal(mean_i, ω)``) samples far better than the
        non-centred one (``T(θ_i) = mean_i + ω z_i``), whose ``z_i`` are then tightly tied to the
        population values; where they do not (sparse data, a PD parameter the design barely
        touches), the non-centred form avoids the funnel. ``"auto"`` (default) chooses per
        parameter and subject from the curvature at the MAP (:func:`_choose_centered`); the
        choice is stored in the fit (``attrs["centered_parameters"]``, and the number of
        subjects centred per parameter in ``attrs["centered_subjects"]``). The chains check the
        choice: when more than 1% of the draws diverge and the divergent draws sit at small ω
        of a centred parameter (the centred funnel), the fit is rerun with every subject
        effect non-centred and the run with fewer divergences kept
        (:func:`_fallback_centered`; ``attrs["parameterization_check"]``). Study effects are
        always non-centred (few studies). The MAP start is computed non-centred (the centred joint
        density has no mode at finite ω). IC50s the model pairs with a Hill exponent
        (``hill_levels``; temsirolimus: S6K) are sampled through their level at a reference
        concentration chosen at the MAP (:func:`_choose_levels`): an exact change of variables
        that straightens the curved IC50–Hill ridge; recorded in ``attrs["sampled_levels"]``.
        With ``"auto"`` their subject effects are then non-centred (they follow the level).
        A parameter with between-study effects is sampled through the mean value of the
        studies with data on it (:func:`_choose_anchors`; ``attrs["anchored_parameters"]``),
        not its population value, which the data pin only through the study effects' prior:
        the same posterior.
    map_steps : int
        Iteration limit of the MAP optimisation (L-BFGS on the unconstrained scale, from the
        prior medians) that gives NUTS its start (the joint mode) and ``method="map"`` its
        mode (of the population values, subject effects integrated out).
    target_accept, max_tree_depth : float, int
        NUTS settings.
    mass_matrix : {"diagonal", "dense-population", "dense"}
        NUTS's adapted mass matrix: diagonal (default); one dense block over the
        population-level sites (typical values, between-subject and residual SDs, covariate
        and study effects; subject effects stay diagonal), which helps when population values
        are correlated a posteriori; or dense over everything (only for small models: it is
        estimated from the warmup draws). Adaptation starts from the Laplace covariance at the
        chain start (:func:`_laplace_covariance`; its population block for the dense block),
        not NumPyro's identity (fewer leapfrog steps in early warmup; benchmarks/RESULTS.md).

    aggregate : path, DataFrame or AggregateData, optional
        Published arm-level summaries (mean Cmax, AUC, PD change of an arm; the format:
        :mod:`pkpd.data.aggregate`) fitted with the individual data: each arm is simulated
        with ``aggregate_virtual`` virtual subjects (fixed normals from ``aggregate_seed``) at
        every draw, and its summaries enter through their sampling distributions
        (:mod:`pkpd.inference.aggregate`). An arm of a study the individual data do not have
        gets that study's own between-study effect. The posterior then has
        ``aggregate_mu``/``aggregate_se`` [aggregate_row] (each summary's prediction and
        sampling SE on its scale; :func:`pkpd.diagnostics.aggregate_table` sets them beside
        the published values).

    Returns
    -------
    arviz.InferenceData
        Groups ``posterior`` (``pop_<param>`` on the natural scale and canonical units,
        ``omega_<param>``, ``omega_study_<param>``, ``eta_<param>`` [subject],
        ``eta_study_<param>`` [study], ``theta_<param>`` [subject] individual values,
        ``beta_<effect>``, ``sigma_*``), ``sample_stats``, ``log_likelihood`` (``y`` [obs]),
        ``observed_data``, ``constant_data``; provenance in ``attrs``. Every name is
        netCDF-safe (:mod:`pkpd.inference.names`): data columns are ``record_<safe name>``
        with the column's name in the ``original_name`` attribute
        (:func:`pkpd.inference.posterior.data_columns`); an effect on a column such as
        ``CRCL_mL/min`` is ``beta_cl_crcl_ml_min``, its ``covariate`` attribute the column's
        name. What the file will hold apart from the draws is written once to a temporary
        file before sampling (:func:`check_saveable`), so the fit cannot fail when saved.
    """
    if method not in ("nuts", "map"):
        raise FitError(f"method={method!r}; expected 'nuts' or 'map'")
    for name, v in (("chains", chains), ("warmup", warmup), ("draws", draws)):
        if not isinstance(v, int) or v < (0 if name == "warmup" else 1):
            raise FitError(f"{name}={v!r}; expected a positive whole number")
    if mass_matrix not in ("diagonal", "dense-population", "dense"):
        raise FitError(
            f"mass_matrix={mass_matrix!r}; expected 'diagonal', 'dense-population' or 'dense'"
        )
    if parameterization not in ("auto", "centered", "noncentered"):
        raise FitError(
            f"parameterization={parameterization!r}; expected 'auto', 'centered' or 'noncentered'"
        )
    from pkpd._xla import require_x64

    require_x64("pkpd.fit")
    timing: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name):
        nonlocal clock
        now = time.perf_counter()
        timing[name] = round(now - clock, 3)
        clock = now

    spec = prepare(
        model,
        data,
        priors,
        covariates=covariates,
        endpoints=endpoints,
        aggregate=aggregate,
        aggregate_virtual=aggregate_virtual,
        aggregate_seed=aggregate_seed,
    )
    from pkpd.models.predict import warn_concentration_scale

    warn_concentration_scale(spec.model, spec.dataset, spec.priors.typical())
    # everything but the draws written once to a temporary file: what netCDF refuses stops
    # the fit now, not at save time after sampling
    check_saveable(spec, dict(seed=seed, method=method, chains=chains, warmup=warmup, draws=draws))
    from pkpd.inference.checks import zero_prediction_problems

    zero = zero_prediction_problems(spec)
    if zero:
        raise FitError("; ".join(zero))
    lap("prepare")
    spec.parameterization = parameterization if method == "nuts" else "noncentered"
    nm_start = build_model(dataclasses.replace(spec, parameterization="noncentered"))
    obs = jnp.asarray(observed_values(spec.obs_y, spec.obs_lloq, spec.obs_blq))
    key = jax.random.PRNGKey(seed)
    k_map, k_run, k_jit, k_ll = jax.random.split(key, 4)
    x_start, objective = _valid_start(nm_start, obs, k_map)
    # the joint mode (population and subject effects) is NUTS's start; method="map" finds the
    # mode of the population values with the subject effects integrated out instead
    # (pkpd.inference.laplace), from the same start
    flat_map, map_energy = (
        _map_estimate(objective, x_start, max_iter=map_steps)
        if method == "nuts"
        else (x_start, float("nan"))
    )
    flat_map = jnp.asarray(flat_map)
    unravel = objective.unravel
    u0 = unravel(flat_map)
    lap("map")
    bsv = centrable_parameters(spec)
    if spec.parameterization == "centered":
        spec.centered = bsv
    elif spec.parameterization == "auto" and bsv:
        spec.centered, spec.centered_subjects = _choose_centered(spec, objective, flat_map)
        lap("parameterization")
    if method == "nuts":
        spec.levels = _choose_levels(
            spec, objective, flat_map, tuple(sorted(_population_sites(nm_start, obs)))
        )
        spec.anchors = _choose_anchors(spec)
        if spec.parameterization == "auto" and spec.levels:
            # A levelled IC50's subject values, non-centred, ride the population's level
            # (log IC50_i = k − ℓ/h + ω z_i), so the ridge is gone without centring; centred,
            # they keep the funnel of their ω (on the bundled temsirolimus data: all 9
            # divergences of a 4 × 500 fit at small omega_s6k_ic50, 0 non-centred).
            spec.centered = tuple(p for p in spec.centered if p not in spec.levels)
            spec.centered_subjects = {
                p: m for p, m in spec.centered_subjects.items() if p not in spec.levels
            }
        lap("levels")
    nm, u0, chain_objective = _chain_model(spec, nm_start, objective, obs, u0, method == "nuts")
    extra = {}
    inverse_mass = None
    laplace_flat_dirs = 0
    map_attrs: dict = {}
    if method == "nuts":
        nuts = dict(
            obs=obs,
            key_run=k_run,
            key_jit=k_jit,
            chains=chains,
            warmup=warmup,
            draws=draws,
            target_accept=target_accept,
            max_tree_depth=max_tree_depth,
            mass_matrix=mass_matrix,
            progress_bar=progress_bar,
        )
        samples, extra, inverse_mass = _run_nuts(spec, nm, chain_objective, u0, lap=lap, **nuts)
        fallback = _fallback_centered(spec, samples, extra, warmup)
        if fallback is not None:
            # auto centred some subject effects and the chains diverged: the same fit with
            # every subject effect non-centred (levels and anchors kept), and the run with
            # fewer divergent transitions kept (_fallback_centered)
            spec_nc = dataclasses.replace(spec, centered=(), centered_subjects={})
            nm_nc, u_nc, objective_nc = _chain_model(
                spec_nc, nm_start, objective, obs, unravel(flat_map), True
            )
            run2 = _run_nuts(
                spec_nc,
                nm_nc,
                objective_nc,
                u_nc,
                lap=lambda name: lap(f"{name}_noncentered"),
                **nuts,
            )
            n1, n2 = int(extra["diverging"].sum()), int(run2[1]["diverging"].sum())
            keep_second = n2 < n1
            parameterization_check = dict(
                centered=list(spec.centered),
                funnel=list(fallback),
                divergences_centered=n1,
                divergences_noncentered=n2,
                kept="noncentered" if keep_second else "auto",
            )
            if keep_second:
                spec, nm = spec_nc, nm_nc
                samples, extra, inverse_mass = run2
        else:
            parameterization_check = {}
        n_chains = chains
    else:
        from pkpd.inference.laplace import laplace_marginal_fit

        try:
            samples, map_attrs, map_log_density = laplace_marginal_fit(
                spec, nm, obs, flat_map, unravel, k_run, draws, map_steps
            )
        except TypeError as e:
            if "forward-mode" not in str(e):
                raise
            raise FitError(
                f"method='map' needs forward-mode derivatives of model {spec.model.name!r}'s "
                "predictions (the subjects' Hessians), which its ODE solver (diffrax, "
                "reverse-mode only) does not give; fit it with method='nuts'"
            ) from None
        map_energy = -map_log_density
        laplace_flat_dirs = map_attrs.pop("laplace_flat_directions")
        n_chains = 1
        parameterization_check = {}
        lap("laplace")
    flat = jax.tree.map(lambda x: x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:]), samples)
    # deterministic sites (theta, eta, pop of percentages) for every draw
    from numpyro.infer import Predictive
    from numpyro.infer.util import log_likelihood

    sites = _deterministic_sites(nm, obs)

    def pointwise(flat, obs):
        det = Predictive(nm, posterior_samples=flat, return_sites=sites)(k_ll, obs=obs)
        ll = log_likelihood(nm, {**flat, **det}, obs=obs)
        n = jax.tree.leaves(flat)[0].shape[0]
        return det, ll["y"] if "y" in ll else jnp.zeros((n, 0))  # no individual data: no y

    # compiled (eagerly every op compiles on its own), the observations an argument
    det, ll = jax.jit(pointwise)(flat, obs)
    flat = {**flat, **det}
    lap("pointwise")
    idata = _to_inference_data(
        spec,
        flat,
        np.asarray(ll),
        n_chains,
        extra,
        attrs=dict(
            seed=seed,
            method=method,
            chains=chains if method == "nuts" else 1,
            warmup=warmup if method == "nuts" else 0,
            draws=draws,
            map_log_density=-map_energy,
            parameterization=spec.parameterization,
            centered_parameters=list(spec.centered),
            # auto's choice checked by its chains (_fallback_centered): {} when nothing was
            # centred or the chains did not diverge, else the divergences of both runs and
            # which was kept
            parameterization_check=parameterization_check,
            # subjects sampled centred, per parameter with subject effects (all, some, none)
            centered_subjects={
                p: int(np.sum(spec.centered_mask(p)))
                for p in spec.estimated
                if spec.priors.parameters[p].bsv is not None
            },
            # IC50s sampled through their Hill-scaled level (_choose_levels): hill, scale and
            # reference concentration (in the IC50's unit) of each
            sampled_levels={
                p: {
                    "hill": h,
                    "scale": sc,
                    "reference": float(np.exp(r)),
                    "unit": spec.priors.parameters[p].unit,
                }
                for p, (h, sc, r) in spec.levels.items()
            },
            # parameters sampled through the mean value of the studies with data on them
            # (_choose_anchors): {parameter: [study, ...]}
            anchored_parameters={
                p: [spec.study_names[i] for i in idx] for p, idx in spec.anchors.items()
            },
            mass_matrix=mass_matrix if method == "nuts" else "",
            # NUTS's initial mass matrix: "laplace" (see _laplace_covariance) or "identity"
            # (NumPyro's default, where the gradient is not finite near the start)
            initial_mass_matrix=(
                ("laplace" if inverse_mass is not None else "identity") if method == "nuts" else ""
            ),
            laplace_flat_directions=laplace_flat_dirs,
            # method="map": what was done (pkpd.inference.laplace.laplace_marginal_fit)
            **map_attrs,
        ),
    )
    lap("output")
    timing["total"] = round(sum(timing.values()), 3)
    # wall seconds per phase (compilation included where it happens), for the user and the
    # benchmarks: prepare, map (start and polish), starts, nuts (warmup + draws) or laplace,
    # pointwise (deterministics and log-likelihood of every draw), output
    idata.attrs["timing_s"] = json.dumps(timing)
    return idata


def centrable_parameters(spec) -> tuple[str, ...]:
    """Parameters whose subject effects can be centred: estimated, with between-subject
    variability, and without inter-occasion variability (their individual values are per
    occasion; the centred form would need them per subject); none without subjects (published
    summaries alone)."""
    if not spec.n_subjects:
        return ()
    return tuple(
        p for p in spec.estimated if spec.priors.parameters[p].bsv is not None and p not in spec.iov
    )


def _chain_model(spec, nm_start, objective: _Objective, obs, u_start, compile_objective: bool):
    """The model the chains run (``spec``'s centring, levels and anchors), its unconstrained
    start from the non-centred MAP point ``u_start``, and its compiled objective (only when
    ``compile_objective``; the start model's own ``objective`` where nothing changes it)."""
    if not (spec.centered or spec.levels or spec.anchors):
        return nm_start, u_start, objective
    nm = build_model(spec)
    u0 = _centered_start(spec, nm, nm_start, obs, u_start)
    return nm, u0, (_Objective(nm, obs, u0) if compile_objective else objective)


@contextlib.contextmanager
def _kernel_mass(sampler, inverse_mass):
    """``sampler``'s initial inverse mass matrix set to ``inverse_mass`` (a traced argument)
    while a compiled program is traced, restored after."""
    if sampler is None or not hasattr(sampler, "_inverse_mass_matrix"):
        yield
        return
    saved = sampler._inverse_mass_matrix
    sampler._inverse_mass_matrix = inverse_mass
    try:
        yield
    finally:
        sampler._inverse_mass_matrix = saved


def _data_as_arguments(one_chain):
    """``(run, args)``: NumPyro's one-chain function with the model's keyword arguments (the
    observations) and the kernel's initial inverse mass matrix (the Laplace covariance) taken
    as arguments of the compiled program rather than baked into it as constants, so that fits
    of other data on the same design (simulation-based calibration) compile the same program
    and JAX's persistent cache serves it. ``None`` when ``one_chain`` is not NumPyro's
    ``partial(MCMC._single_chain_mcmc, ...)``."""
    if not (isinstance(one_chain, functools.partial) and "kwargs" in one_chain.keywords):
        return None
    keywords = dict(one_chain.keywords)
    kwargs = keywords.pop("kwargs")
    fn = one_chain.func
    sampler = getattr(getattr(fn, "__self__", None), "sampler", None)
    inverse_mass = getattr(sampler, "_inverse_mass_matrix", None)

    def run(init, kwargs, inverse_mass):
        with _kernel_mass(sampler, inverse_mass):
            return fn(init, kwargs=kwargs, **keywords)

    return run, (kwargs, inverse_mass)


def _compiled_chain_map(one_chain):
    """The chains one after another inside one compiled program (``lax.map``)."""
    split = _data_as_arguments(one_chain)
    if split is None:
        return jax.jit(lambda args: jax.lax.map(one_chain, args))
    run, extra = split
    compiled = jax.jit(lambda args, *extra: jax.lax.map(lambda a: run(a, *extra), args))
    return lambda args: compiled(args, *extra)


def _compiled_single_chain_mcmc():
    """NumPyro's ``MCMC`` whose lone chain (``num_chains=1``) runs as one compiled program,
    its initialisation included, as the chains of :func:`_compiled_chain_map` do. NumPyro runs
    a single chain's initialisation outside any compiled program, op by op: on this project's
    2-core machine a 20-subject one-compartment fit with 20 + 10 iterations spent 20.1 s in
    NUTS with one chain against 8.5 s for two compiled chains (2026-12-06). No progress bar
    (it cannot run inside a compiled program)."""
    from numpyro.infer import MCMC

    class CompiledSingleChainMCMC(MCMC):
        def _single_chain_mcmc(self, init, args, kwargs, collect_fields, remove_sites):
            if self.num_chains != 1 or self.progress_bar:
                return super()._single_chain_mcmc(init, args, kwargs, collect_fields, remove_sites)

            sampler = self.sampler

            def run(init, args, kwargs, inverse_mass):
                # the data and the initial mass matrix are arguments (see _data_as_arguments)
                with _kernel_mass(sampler, inverse_mass):
                    return MCMC._single_chain_mcmc(
                        self, init, args, kwargs, collect_fields, remove_sites
                    )

            inverse_mass = getattr(sampler, "_inverse_mass_matrix", None)
            return jax.jit(run)(init, args, kwargs, inverse_mass)

    return CompiledSingleChainMCMC


def calls_diffrax(fn, *args) -> bool:
    """Whether ``fn(*args)`` integrates an ODE with diffrax: its jaxpr (traced, not compiled)
    holds a call of :func:`diffrax.diffeqsolve`, at any depth (a model's own ODE, an
    ``ODEModel``, a model from blocks on its ODE engine, temsirolimus's diffrax PD path)."""

    def walk(jaxpr) -> bool:
        for eqn in jaxpr.eqns:
            if eqn.params.get("name") == "diffeqsolve":
                return True
            for v in eqn.params.values():
                for sub in v if isinstance(v, (list, tuple)) else (v,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns") and walk(inner):
                        return True
        return False

    return walk(jax.make_jaxpr(fn)(*args).jaxpr)


def chain_plan(chains: int, potential, u0, devices: int | None = None):
    """``(chain_method, in_turn)`` for a fit: :func:`chain_method`, except that chains of a
    model whose ``potential(u0)`` integrates an ODE (:func:`calls_diffrax`) run in turn in one
    compiled program instead of in parallel over devices (``in_turn`` True): NumPyro's
    parallel chains (``pmap``, a ``shard_map`` in JAX 0.10) cannot differentiate diffrax's
    solve ("Closure-converted function called with different dynamic arguments"; diffrax
    issue #765), which made ``pkpd fit --chains 4 --model my_ode.py`` fail."""
    method = chain_method(chains, devices)
    if method == "parallel" and calls_diffrax(potential, u0):
        return _compiled_chain_map, True
    return method, False


def chain_method(chains: int, devices: int | None = None, platform: str | None = None):
    """How NumPyro runs ``chains`` chains: ``"parallel"`` when there is a device per chain;
    otherwise, on CPU, the chains one after another in one compiled program; on an
    accelerator, vectorised (``vmap``: the device is wide).

    Why not NumPyro's own ``"sequential"`` or ``"vectorized"`` on CPU: both initialise the
    chains outside the compiled program, op by op (hundreds of small compilations), and
    ``"sequential"`` compiles each chain anew, while a vectorised NUTS step waits for the
    longest tree of all chains. Measured on this project's 2-core machine (20-subject
    one-compartment IV fit, 4 chains x (250 + 250), one device): vectorised 32.6 s,
    sequential 33.3 s, compiled map 7.7 s; four host devices in parallel 6.9 s
    (``benchmarks/RESULTS.md``, 2026-12-06).
    """
    if chains <= 1:
        return "sequential"
    devices = jax.local_device_count() if devices is None else devices
    if devices >= chains:
        return "parallel"
    platform = jax.default_backend() if platform is None else platform
    return _compiled_chain_map if platform == "cpu" else "vectorized"


def _run_nuts(
    spec,
    nm,
    objective: _Objective,
    u0,
    *,
    obs,
    key_run,
    key_jit,
    chains,
    warmup,
    draws,
    target_accept,
    max_tree_depth,
    mass_matrix,
    progress_bar,
    lap=lambda name: None,
):
    """NUTS on the chain model ``nm`` from jittered starts around ``u0``, its initial mass
    matrix the Laplace covariance there. Returns ``(samples by chain, sample stats, inverse
    mass matrix or None)``."""
    from numpyro.infer import MCMC, NUTS
    from numpyro.infer.util import potential_energy

    jit = _jittered_starts(objective, u0, key_jit, chains)
    lap("starts")
    inverse_mass = None
    # initial mass matrix: the Laplace covariance at the start (NUTS adapts it from there)
    population = tuple(sorted(_population_sites(nm, obs)))
    laplace = _laplace_covariance(
        objective, jax.flatten_util.ravel_pytree(u0)[0], population, spec.n_subjects
    )
    if laplace is not None:
        var, pop_idx, sigma_pp = laplace
        inverse_mass = jnp.asarray(var)
    lap("mass_matrix")
    dense = False
    if mass_matrix == "dense":
        dense = True
    elif mass_matrix == "dense-population":
        dense = [population]
        if laplace is not None:
            rest = np.setdiff1d(np.arange(var.size), pop_idx)
            inverse_mass = {population: jnp.asarray(sigma_pp)}
            if rest.size:
                inverse_mass[tuple(sorted(set(u0) - set(population)))] = jnp.asarray(var[rest])
    kernel = NUTS(
        nm,
        target_accept_prob=target_accept,
        max_tree_depth=max_tree_depth,
        dense_mass=dense,
        inverse_mass_matrix=inverse_mass,
    )
    method_chain, in_turn = chain_plan(
        chains, lambda u: potential_energy(nm, (), {"obs": obs}, u), u0
    )
    with warnings.catch_warnings():
        # a compiled map of chains has no progress bar; the fit says so itself (below)
        warnings.filterwarnings("ignore", message="Disabling progress bar")
        one = chains == 1
        mcmc = (_compiled_single_chain_mcmc() if one else MCMC)(
            kernel,
            num_warmup=warmup,
            num_samples=draws,
            num_chains=chains,
            chain_method=method_chain,
            progress_bar=progress_bar and not one,
            # the observations go into the sampling loop as its arguments, not constants
            jit_model_args=True,
        )
    if progress_bar and one:
        print("pkpd: one chain, run as one compiled program (no progress bar)", file=sys.stderr)
    elif progress_bar and in_turn:
        print(
            f"pkpd: {chains} chains run one after another in one compiled program (no progress "
            "bar): the model integrates an ODE (diffrax), which JAX cannot differentiate in "
            "chains run in parallel over devices",
            file=sys.stderr,
        )
    elif progress_bar and callable(method_chain):
        print(
            f"pkpd: {chains} chains run one after another in one compiled program (no progress "
            f"bar): JAX has {jax.local_device_count()} device(s); for parallel chains on CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={chains} before JAX starts",
            file=sys.stderr,
        )
    mcmc.run(
        key_run,
        obs=obs,
        init_params=jit if chains > 1 else jax.tree.map(lambda x: x[0], jit),
        extra_fields=(
            "diverging",
            "energy",
            "num_steps",
            "accept_prob",
            "potential_energy",
            "adapt_state.step_size",
        ),
    )
    samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
    lap("nuts")
    fields = mcmc.get_extra_fields(group_by_chain=True)
    extra = {
        "diverging": np.asarray(fields["diverging"]),
        "energy": np.asarray(fields["energy"]),
        "n_steps": np.asarray(fields["num_steps"]),
        "acceptance_rate": np.asarray(fields["accept_prob"]),
        "lp": -np.asarray(fields["potential_energy"]),
        "step_size": np.asarray(fields["adapt_state.step_size"]),
        "tree_depth": np.floor(np.log2(np.asarray(fields["num_steps"]) + 1)).astype(int),
    }
    return samples, extra, inverse_mass
