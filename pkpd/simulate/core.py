""":func:`simulate`: posterior draws × virtual subjects × regimens, chunked and sharded."""

from __future__ import annotations

import datetime as _dt
import json
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from pkpd.simulate.engines import (
    ModalEngine,
    PredictEngine,
    metric_catalogue,
    metric_times,
    metrics_and_profiles,
)
from pkpd.simulate.errors import SimulationError
from pkpd.simulate.plan import (
    build_grid,
    default_horizon,
    normalize_regimens,
    plan_regimen,
    with_model_route,
)
from pkpd.simulate.population import build_population, check_population

MARKER = "pkpd_simulation"
#: Default number of (draw, subject) pairs computed per call.
DEFAULT_CHUNK = 2048


def _load(fit):
    from pkpd.inference.fit import FitError, load_fit

    if isinstance(fit, (str, Path)):
        return load_fit(fit)
    if not hasattr(fit, "posterior") or not hasattr(fit, "attrs"):
        raise SimulationError(
            f"fit must be an InferenceData from pkpd.fit or the path of a saved fit; got "
            f"{type(fit).__name__}"
        )
    if not int(fit.attrs.get("pkpd_fit", 0)):
        raise FitError(
            "the InferenceData is not a pkpd fit (no 'pkpd_fit' attribute); give the result of "
            "pkpd.fit or pkpd.load_fit"
        )
    return fit


#: Most default output times (daily over the horizon); past it, ``times`` must be given.
MAX_DEFAULT_TIMES = 100_000


def _default_times(horizon: float) -> np.ndarray:
    step = 24.0 if horizon > 168.0 else 1.0
    if horizon / step > MAX_DEFAULT_TIMES:
        raise SimulationError(
            f"a horizon of {horizon:g} h gives {horizon / step:,.0f} daily output times, more "
            f"than {MAX_DEFAULT_TIMES:,}; give a shorter horizon or the output times yourself"
        )
    t = np.arange(0.0, horizon + 1e-9, step)
    return t if abs(t[-1] - horizon) < 1e-9 else np.append(t, horizon)


def _posterior(idata, spec, n_draws):
    """Selected posterior draws of every hierarchy quantity, ``{name: [n_draws, ...]}``."""
    post = idata.posterior
    n_chain, n_draw = post.sizes["chain"], post.sizes["draw"]
    total = n_chain * n_draw
    if n_draws is None:
        n_draws = total
    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 1:
        raise SimulationError(f"n_draws={n_draws!r}; expected a whole number >= 1")
    if n_draws > total:
        raise SimulationError(
            f"n_draws={n_draws}, but the fit has {total} posterior draws ({n_chain} chain(s) x "
            f"{n_draw}); ask for at most {total} or refit with more draws"
        )
    from pkpd.inference.posterior import thin_indices

    idx = thin_indices(total, n_draws)

    def get(name):
        v = post[name].values
        return v.reshape((total,) + v.shape[2:])[idx]

    pri = spec.priors
    out = {"index": idx}
    for p in spec.estimated:
        out[f"pop_{p}"] = get(f"pop_{p}")
        if pri.parameters[p].bsv is not None:
            out[f"omega_{p}"] = get(f"omega_{p}")
        if f"omega_iov_{p}" in post:
            out[f"omega_iov_{p}"] = get(f"omega_iov_{p}")
        if f"omega_study_{p}" in post:
            out[f"omega_study_{p}"] = get(f"omega_study_{p}")
            out[f"eta_study_{p}"] = get(f"eta_study_{p}")
    for eff in spec.effects:
        if not eff.prior.is_fixed:
            out[f"beta_{eff.name}"] = get(f"beta_{eff.name}")
    if spec.correlated:
        out["corr_cholesky"] = get("corr_cholesky")
    if spec.iov_correlated:
        out["corr_iov_cholesky"] = get("corr_iov_cholesky")
    missing = [k for k in out if k != "index" and not np.all(np.isfinite(out[k]))]
    if missing:
        raise SimulationError(f"the fit's posterior has non-finite values in {missing}")
    return out, len(idx), total


def _occasion_starts(plans, rule, horizon) -> np.ndarray:
    """Occasion starts of each regimen ``[R, O]`` (h): at each dose (``("dose", 0)``) or
    every ``H`` hours from the first dose (``("every", H)``); regimens with fewer occasions are
    padded with increasing times past the horizon (never reached)."""
    starts = []
    for p in plans:
        t = np.unique(np.asarray(p.time, dtype=float))
        if rule[0] == "every":
            t = np.arange(t[0], horizon + 1e-9, rule[1]) if len(t) else np.zeros(1)
        t = t[t <= horizon + 1e-9] if len(t) else np.zeros(1)
        end = np.asarray(p.time, dtype=float) + np.asarray(p.dur, dtype=float)
        nxt = np.searchsorted(t, np.asarray(p.time, dtype=float), side="right")
        crossing = (nxt < len(t)) & (end > t[np.minimum(nxt, len(t) - 1)] + 1e-9)
        if crossing.any():
            raise SimulationError(
                f"regimen '{p.label}': an infusion still runs when the next occasion starts "
                f"(dose at {float(np.asarray(p.time)[crossing][0]):g} h); occasions must start "
                "after each infusion ends: use occasions='dose' or a longer 'every N ...'"
            )
        starts.append(t)
    n = max(len(x) for x in starts)
    return np.stack([np.concatenate([x, horizon + 1.0 + np.arange(n - len(x))]) for x in starts])


def simulate(
    fit,
    regimens,
    *,
    population=None,
    n_subjects: int | None = None,
    n_draws: int | None = 100,
    times=None,
    seed: int = 0,
    study: str | None = None,
    endpoints=None,
    horizon_h: float | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    engine: str = "auto",
    progress_bar: bool = True,
    typical: bool = False,
    occasions: str = "dose",
) -> xr.Dataset:
    """Simulate regimens for virtual subjects under posterior draws (see :mod:`pkpd.simulate`).

    Parameters
    ----------
    fit : arviz.InferenceData or path
        A pkpd fit (:func:`pkpd.fit`) or its netCDF file (:func:`pkpd.save_fit`).
    regimens : str, Regimen, sequence of them, or mapping label -> regimen
        Dosing regimens (:class:`pkpd.Regimen` text such as ``"25 mg q1w x12 over 30 min"``).
        Doses go into the model's default compartment, with its route
        (:attr:`pkpd.models.Model.dose_route`): a regimen that states no route is given that
        way (by mouth for a model dosed into a depot), one that states another route or an
        infusion the model cannot take is refused.
    population : None, DataFrame, CSV path or mapping
        Covariates of the virtual subjects (:mod:`pkpd.simulate.population`); default: resampled
        from the fitted data. The same subjects are used for every draw and regimen.
    n_subjects : int, optional
        Virtual subjects (default 100; a population table: its rows).
    n_draws : int or None
        Posterior draws used, evenly spaced over the chains (``None``: all).
    times : array-like, optional
        Output times of the profiles (h from the first dose; default daily over the horizon,
        hourly when it is one week or less). ``[]`` stores no profiles (metrics only).
    seed : int
        Seed of the subject and study random effects (and of population resampling): the same
        seed gives the same numbers, bit for bit on any number of devices; another
        ``chunk_size`` changes them only by rounding (XLA's vectorised math, ~1e-15).
    study : None, "new" or a study name
        ``None``: no study effect (the typical study); ``"new"``: a new study effect drawn per
        posterior draw from ``N(0, omega_study)``, shared by its subjects; a fitted study's name:
        that study's estimated effects.
    endpoints : sequence of str, optional
        Endpoints to simulate (default: the fitted ones).
    horizon_h : float, optional
        Simulated time (h); default: the end of the longest regimen's last dosing interval.
    chunk_size : int
        (draw, subject) pairs computed at once on each device; memory grows linearly with it
        (about 0.1 MB per pair for the joint temsirolimus model, 3 regimens, 12 weeks).
    engine : {"auto", "modal", "predict"}
        ``"modal"``: exact step-by-step linear PK (+ temsirolimus turnover), fast;
        ``"predict"``: the model's own ``predict`` (any model). ``"auto"`` picks modal where
        supported.
    progress_bar : bool
        Show a progress bar (stderr) when there is more than one chunk.
    typical : bool
        Simulate the *typical subject* (NONMEM/Pumas "typical value" simulation): one subject
        (``n_subjects`` must be ``None`` or 1) whose covariates are the covariate effects'
        reference values (power, linear, exponential: their ``reference``; categorical flags:
        0), the other covariates the fitted data's median (unless ``population`` is given: a
        mapping sets columns of that subject, a table of one row is used as is), with every
        subject random effect eta set to 0 (and, with the default ``study=None``, no study
        effect). The spread over draws is then parameter uncertainty only: typical value ±
        uncertainty. Recorded as the attribute ``typical=1`` (``0`` otherwise).
    occasions : str
        For a fit with inter-occasion variability: where the simulated subjects' occasions
        start, ``"dose"`` (each dose starts one; default) or ``"every N h|d|w"`` (from the
        first dose), as :func:`pkpd.read_dataset` derives them. Every occasion draws a new
        occasion effect κ ~ N(0, ω_iov²) per subject (the same κ for a subject's k-th occasion
        in every regimen), and the model's own ``predict`` computes the profiles (the modal
        engine has no parameters that change over time). Stored as ``param_<p>`` with an
        ``occasion`` dimension and ``occasion_start_h`` per regimen.

    Returns
    -------
    xarray.Dataset
        See the module docstring of :mod:`pkpd.simulate` for the variables and attributes.
    """
    from pkpd._xla import require_x64

    require_x64("pkpd.simulate")
    from pkpd.inference import hierarchy as H
    from pkpd.inference.posterior import restore_spec

    idata = _load(fit)
    spec = restore_spec(idata)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise SimulationError(f"seed={seed!r}; expected an integer")
    if not isinstance(typical, (bool, np.bool_)):
        raise SimulationError(f"typical={typical!r}; expected True or False")
    typical = bool(typical)
    from pkpd.data.reader import parse_occasion_rule

    try:
        occ_rule = parse_occasion_rule(occasions) or ("dose", 0.0)
    except ValueError:
        raise SimulationError(
            f"occasions={occasions!r}; expected 'dose' (each dose starts an occasion) or "
            "'every N h', 'every N d', 'every N w' (from the first dose)"
        ) from None
    # the typical subject has every random effect 0, its occasion effects too
    with_iov = list(spec.iov) if not typical else []
    if typical and (
        isinstance(n_subjects, bool)
        or not isinstance(n_subjects, (type(None), int, np.integer))
        or n_subjects not in (None, 1)
    ):
        raise SimulationError(
            f"n_subjects={n_subjects!r} with typical=True: a typical simulation has one subject "
            "(the typical one, every random effect 0); leave n_subjects out or give 1"
        )
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, (int, np.integer))
        or (chunk_size < 1)
    ):
        raise SimulationError(f"chunk_size={chunk_size!r}; expected a whole number >= 1")
    regs = [
        (label, with_model_route(label, reg, spec.model))
        for label, reg in normalize_regimens(regimens)
    ]

    # endpoints
    fitted = list(spec.model.endpoints)
    if endpoints is None:
        eps = fitted
    else:
        eps = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        bad = [e for e in eps if e not in fitted]
        if bad or not eps:
            raise SimulationError(
                f"endpoint(s) {bad or eps} cannot be simulated from this fit: its model "
                f"{spec.model.name!r} was fitted for {', '.join(fitted)} (a fit of more endpoints "
                "estimates the parameters the others need)"
            )
        eps = [e for e in fitted if e in eps]
    units = spec.model.endpoint_units

    # study
    studies = spec.study_names
    if study is not None and study != "new" and str(study) not in studies:
        raise SimulationError(
            f"study={study!r} is not a study of the fit (it has {', '.join(studies)}); give one "
            "of those, 'new' for a new study, or None for the typical study"
        )

    # regimens, horizon, output times
    if horizon_h is not None:
        if not (
            isinstance(horizon_h, (int, float, np.number))
            and np.isfinite(horizon_h)
            and horizon_h > 0
        ):
            raise SimulationError(
                f"horizon_h={horizon_h!r}; expected a positive, finite number of hours"
            )
        horizon = float(horizon_h)
    else:
        horizon = default_horizon([r for _, r in regs])
    if times is None:
        out_times = _default_times(horizon)
    else:
        out_times = np.atleast_1d(np.asarray(times, dtype=float)).ravel()
        if out_times.size and (not np.all(np.isfinite(out_times)) or out_times.min() < 0):
            raise SimulationError("times must be finite and >= 0 (h from the first dose)")
        if out_times.size and out_times.max() > horizon + 1e-9:
            if horizon_h is not None:
                raise SimulationError(
                    f"times go to {out_times.max():g} h, past horizon_h={horizon:g} h"
                )
            horizon = float(out_times.max())
        out_times = np.unique(out_times)
    plans = [plan_regimen(label, reg, horizon) for label, reg in regs]

    # population
    rng = np.random.default_rng(seed)
    table, pop_how = build_population(spec, population, n_subjects, rng, typical=typical)
    needed = [n for p in plans for n in p.needs()]
    check_population(spec, table, needed)
    S = len(table)

    # engine
    params_used = list(spec.estimated) + list(spec.fixed)
    if engine not in ("auto", "modal", "predict"):
        raise SimulationError(f"engine={engine!r}; expected 'auto', 'modal' or 'predict'")
    can_modal = ModalEngine.supports(spec.model, params_used) and not with_iov
    if engine == "modal" and not can_modal:
        why = (
            "parameters that change between occasions (inter-occasion variability)"
            if with_iov
            else f"model {spec.model.name!r} with parameters {params_used}"
        )
        raise SimulationError(f"engine='modal' does not support {why}; use engine='predict'")
    eng = (
        ModalEngine(spec.model, eps)
        if engine == "modal" or (engine == "auto" and can_modal)
        else PredictEngine(spec.model, eps)
    )
    grid = build_grid(
        plans, horizon, out_times, metric_times(eng.model, eps, horizon), full=eng.full_grid
    )
    if isinstance(eng, ModalEngine):
        eng.boluses = bool(grid.bolus.any())
    catalogue = metric_catalogue(spec.model.with_endpoints(eps), eps, horizon)
    combined = spec.model.combined_concentrations(eps)
    window = int(np.max(grid.win[:, :, 1] - grid.win[:, :, 0])) + 1

    # posterior
    post, n_used, n_total = _posterior(idata, spec, n_draws)
    pri = spec.priors
    bsv = [p for p in spec.estimated if pri.parameters[p].bsv is not None]
    study_params = [p for p in spec.estimated if f"omega_study_{p}" in post]
    study_idx = studies.index(str(study)) if study not in (None, "new") else -1
    effect_cols = {eff.name: table[eff.covariate.upper()].to_numpy(float) for eff in spec.effects}
    amounts = np.zeros((S, len(plans), grid.dose_time.shape[1]))
    for r, p in enumerate(plans):
        amounts[:, r, : p.n_doses] = p.amounts_mg(table)

    key = jax.random.PRNGKey(seed)
    k_eta, k_study = jax.random.split(key)
    independent, corr = H.subject_effect_parameters(spec)
    # the normals of a pair: one per parameter with subject effects, in the order of the
    # estimated parameters (independent and correlated ones interleaved)
    corr_pos = [bsv.index(p) for p in corr]
    ind_pos = [bsv.index(p) for p in independent]
    effect_sites = [f"omega_{p}" for p in independent + corr] + (["corr_cholesky"] if corr else [])

    def hierarchy(inp):
        """Individual parameters of a batch of (draw, subject) pairs, ``{name: [B]}``."""
        d, s = inp["draw"], inp["subject"]
        n = d.shape[0]
        z = jax.vmap(
            lambda di, si: jax.random.normal(
                jax.random.fold_in(jax.random.fold_in(k_eta, di), si), (max(len(bsv), 1),)
            )
        )(d, s)
        eta = {}  # the typical subject (typical=True): every subject effect stays 0
        if not typical:
            # one pair at a time: the draw's SDs (and correlation) with the pair's normals
            eta = jax.vmap(
                lambda draw, zi, zci: H.new_subject_effects(draw, independent, corr, zi, zci)
            )(
                {k: inp[k] for k in effect_sites},
                z[:, jnp.asarray(ind_pos, dtype=int)],
                z[:, jnp.asarray(corr_pos, dtype=int)],
            )
        eta_study = {}
        if study == "new" and study_params:
            zs = jax.vmap(
                lambda di: jax.random.normal(jax.random.fold_in(k_study, di), (len(study_params),))
            )(d)
            for k, p in enumerate(study_params):
                eta_study[p] = inp[f"omega_study_{p}"] * zs[:, k]
        elif study_idx >= 0:
            for p in study_params:
                eta_study[p] = inp[f"eta_study_{p}"][:, study_idx]
        beta = {
            k: jnp.full(n, v) for k, v in H.covariate_effects(spec, inp).items()
        }  # fixed effects broadcast to the batch
        effect_values = {k: inp[f"eff_{k}"] for k in effect_cols}
        kappa = {}
        if with_iov:
            # a subject's k-th occasion has the same normal in every regimen
            zk = jax.vmap(
                lambda di, si: jax.random.normal(
                    jax.random.fold_in(jax.random.fold_in(k_occ, di), si),
                    (len(with_iov), occ_start.shape[1]),
                )
            )(d, s)
            omegas = {f"omega_iov_{p}": inp[f"omega_iov_{p}"][:, None] for p in with_iov}
            if spec.iov_correlated:
                omegas["corr_iov_cholesky"] = inp["corr_iov_cholesky"][:, None]  # [B, 1, k, k]
            kappa = H.new_occasion_effects(
                omegas, with_iov, jnp.moveaxis(zk, 1, 0), correlated=spec.iov_correlated
            )
        return H.individual_parameters(
            spec,
            H.population(spec, inp),
            eta=eta,
            eta_study=eta_study,
            beta=beta,
            effect_values=effect_values,
            n=n,
            kappa=kappa,
        )

    occ_start = _occasion_starts(plans, occ_rule, horizon) if with_iov else None
    grid_arrays = {
        "t": grid.t,
        "is_break": grid.is_break,
        "out_idx": grid.out_idx,
        "win": grid.win,
        "pd_idx": grid.pd_idx,
        "infusing": grid.infusing,
        "bolus": grid.bolus,
        "dose_time": grid.dose_time,
        "dose_dur": grid.dose_dur,
        "dose_mask": grid.dose_mask,
    }
    if occ_start is not None:
        grid_arrays["occ_start"] = occ_start
        k_occ = jax.random.fold_in(key, 2)

    def compute(inp, g):
        theta = hierarchy(inp)

        def one_pair(th, amt):
            def one_regimen(amt_r, g_r):
                series, ok = eng.run(th, amt_r, g_r)
                return metrics_and_profiles(eng, th, series, g_r, catalogue, ok, window, combined)

            return jax.vmap(one_regimen)(amt, g)

        return jax.vmap(one_pair)(theta, inp["amounts"]), theta

    # Every device computes batches of the same shape [B] whatever the number of devices, and
    # a pair sits at the same place in its batch: results are bit-identical on 1 or n devices
    # (XLA's vectorised math can differ in the last bit between batch shapes).
    n_dev = jax.device_count()
    N = n_used * S
    B = int(min(chunk_size, N))
    # Every device runs the same per-device program on its batch (no collectives, hence no
    # varying-axis checks): on several devices the batch axis is split over a mesh by a
    # shard_map; on one device the program is jitted as it is. (A one-device shard_map would
    # give the same numbers, but equinox's closure conversion, used by diffrax's implicit
    # solvers such as an ODEModel's kvaerno5, rejects the manual mesh's sharding inside a
    # shard_map: diffrax issue 765, equinox PR 1261, still open in 2026-09. Several devices
    # with an implicit solver hit it still.)
    if n_dev == 1:
        fn = jax.jit(compute)
        put_b, g_dev = jnp.asarray, jax.tree.map(jnp.asarray, grid_arrays)
    else:
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        mesh = jax.make_mesh((n_dev,), ("b",))
        fn = jax.jit(
            jax.shard_map(
                compute, mesh=mesh, in_specs=(P("b"), P()), out_specs=P("b"), check_vma=False
            )
        )
        put_b = lambda x: jax.device_put(x, NamedSharding(mesh, P("b")))  # noqa: E731
        g_dev = jax.device_put(grid_arrays, NamedSharding(mesh, P()))

    R, T = len(plans), len(out_times)
    prof = {e: np.full((R, n_used, S, T), np.nan) for e in eps}
    mets = {m: np.full((R, n_used, S), np.nan) for m in catalogue}
    oks = np.zeros((R, n_used, S), dtype=bool)
    n_occ = 0 if occ_start is None else occ_start.shape[1]
    thetas = {
        p: np.full((n_used, S, n_occ) if p in with_iov else (n_used, S), np.nan)
        for p in params_used
    }
    per_draw = {k: v for k, v in post.items() if k != "index"}
    n_chunks = math.ceil(N / (B * n_dev))  # calls, each of n_dev batches
    bar = None
    if progress_bar and n_chunks > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=N, desc="simulate", unit="subj", file=sys.stderr)
    for c in range(n_chunks):
        flat = np.arange(c * B * n_dev, (c + 1) * B * n_dev)
        valid = flat < N
        flat = np.where(valid, flat, N - 1)  # pad the last chunk with a repeat
        d_idx, s_idx = flat // S, flat % S
        inp = {"draw": d_idx.astype(np.int32), "subject": s_idx.astype(np.int32)}
        for k, v in per_draw.items():
            inp[k] = v[d_idx]
        for k, v in effect_cols.items():
            inp[f"eff_{k}"] = v[s_idx]
        inp["amounts"] = amounts[s_idx]
        (out_prof, out_met, out_ok), out_theta = fn(jax.tree.map(put_b, inp), g_dev)
        dv, sv = d_idx[valid], s_idx[valid]
        for p in thetas:
            thetas[p][dv, sv] = np.asarray(out_theta[p])[valid]
        for e in eps:
            prof[e][:, dv, sv, :] = np.asarray(out_prof[e])[valid].transpose(1, 0, 2)
        for m in catalogue:
            mets[m][:, dv, sv] = np.asarray(out_met[m])[valid].T
        oks[:, dv, sv] = np.asarray(out_ok)[valid].T
        if bar is not None:
            bar.update(int(valid.sum()))
    if bar is not None:
        bar.close()

    # failed solves: NaN, counted
    n_failed = int((~oks).sum())
    if n_failed:
        for e in eps:
            prof[e][~oks] = np.nan
        for m in catalogue:
            mets[m][~oks] = np.nan

    labels = [p.label for p in plans]
    ds = xr.Dataset(
        coords={
            "regimen": np.array(labels, dtype=object),
            "draw": np.arange(n_used),
            "subject": np.arange(S),
            "time": out_times,
        }
    )
    ds["time"].attrs.update(units="h", long_name="time from the first dose")
    for e in eps:
        ds[e] = (("regimen", "draw", "subject", "time"), prof[e])
        ds[e].attrs.update(
            units=units.get(e, ""), long_name=f"{e}, individual prediction (no residual error)"
        )
    for m, info in catalogue.items():
        ds[m] = (("regimen", "draw", "subject"), mets[m])
        ds[m].attrs.update(units=info["units"], long_name=info["long_name"])
        if "time_h" in info:
            ds[m].attrs["time_h"] = info["time_h"]
    par_units = dict(spec.model.parameters)
    for p, v in thetas.items():
        dims = ("draw", "subject", "occasion") if p in with_iov else ("draw", "subject")
        ds[f"param_{p}"] = (dims, v)
        ds[f"param_{p}"].attrs.update(
            units=par_units.get(p, ""),
            long_name=f"individual value of {p} (the same for every regimen)"
            + (" in each occasion" if p in with_iov else ""),
        )
    if with_iov:
        ds = ds.assign_coords(occasion=np.arange(1, n_occ + 1))
        ds["occasion_start_h"] = (
            ("regimen", "occasion"),
            np.where(occ_start < horizon, occ_start, np.nan),
        )
        ds["occasion_start_h"].attrs.update(
            units="h", long_name="start of each occasion (NaN: past the horizon)"
        )
    for col in table.columns:
        ds[f"cov_{col}"] = ("subject", table[col].to_numpy(float))
        ds[f"cov_{col}"].attrs["long_name"] = f"covariate {col} of the virtual subject"
    ds["solve_ok"] = (("regimen", "draw", "subject"), oks.astype(np.int8))
    ds["solve_ok"].attrs["long_name"] = "1 when the subject's solve succeeded (else NaN values)"
    ds["posterior_index"] = ("draw", post["index"])
    ds["posterior_index"].attrs["long_name"] = (
        "draw's index in the fit's posterior (chains flattened)"
    )
    ds["regimen_text"] = ("regimen", np.array([p.text for p in plans], dtype=object))
    ds["regimen_text"].attrs["long_name"] = (
        "the regimen as read, written out with every phase's route and infusion time"
    )
    ds["regimen_description"] = (
        "regimen",
        np.array([p.description for p in plans], dtype=object),
    )
    ds["regimen_description"].attrs["long_name"] = (
        "the regimen's dose table in words (pkpd.Regimen.describe)"
    )
    for name in ("c1", "ss"):
        for i, v in ((1, "start"), (2, "end")):
            var = f"interval_{name}_{v}_h"
            ds[var] = ("regimen", np.array([getattr(p, name)[i] for p in plans]))
            ds[var].attrs.update(units="h", long_name=f"{v} of the {name} dosing interval")
    a = idata.attrs
    ds.attrs.update(
        {
            MARKER: 1,
            "pkpd_version": _version(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "seed": int(seed),
            "model": str(a.get("model", spec.model.name)),
            "endpoints": json.dumps(eps),
            "fit_data_sha256": str(a.get("data_sha256", "")),
            "fit_data_source": str(a.get("data_source", "")),
            "fit_created": str(a.get("created", "")),
            "fit_method": str(a.get("method", "")),
            "fit_seed": str(a.get("seed", "")),
            "fit_posterior_draws": int(n_total),
            "study": (
                "none (typical study)"
                if study is None
                else "new (no effect: the fit has no between-study variability)"
                if study == "new" and not study_params
                else str(study)
            ),
            "regimens": json.dumps([p.text for p in plans]),
            "regimen_labels": json.dumps(labels),
            "horizon_h": float(horizon),
            "n_draws": int(n_used),
            "n_subjects": int(S),
            "population": pop_how,
            "typical": int(typical),
            "engine": eng.name,
            "failed_solves": n_failed,
            "residual_error": "not included: profiles and metrics are individual predictions",
            "steady_state": "the last full dosing interval inside the horizon (see "
            "interval_ss_start_h/interval_ss_end_h); with the default horizon, the interval "
            "after the last dose",
            "cycle1": "the first dosing interval (see interval_c1_start_h/interval_c1_end_h)",
            "time_points": "after a dose given at the same time; troughs are before it",
        }
    )
    return ds


def _version() -> str:
    import pkpd

    return pkpd.__version__
