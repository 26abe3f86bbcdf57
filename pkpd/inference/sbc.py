r"""Simulation-based calibration (SBC) of a model, its priors and pkpd's sampler on a design.

For each replicate ``i`` (Talts et al. 2018, arXiv:1804.06788):

1. **Truth from the prior.** Every parameter of the model is drawn from the priors — population
   values, between-subject (and -study, -occasion) SDs, covariate effects, residual error
   parameters and each subject's effects — by running the fit's own NumPyro model forward on
   the design (:func:`pkpd.inference.model.build_model`), with the key
   ``fold_in(PRNGKey(seed), i)``; so replicate ``i`` is the same whatever ``n`` and whichever
   replicates ran before (an interrupted run resumes, a longer one extends). The model rejects
   parameter values whose predictions fail (a ``-inf`` factor); draws with non-finite
   predictions are rejected here too and drawn again (``fold_in`` of the attempt), which is
   the prior the fit really uses. How many were rejected is recorded.
2. **Data on the design.** The observations are simulated at the design's records (its doses,
   sampling times, covariates and LLOQs) with the residual error model; a value below its
   record's LLOQ is censored (BLQ, handled by M3 in the fit), so the censoring follows the
   simulated value, not the design's flags.
3. **The fit a user would run**: :func:`pkpd.fit` with the given settings (NUTS with
   ``parameterization="auto"`` by default: MAP start, Laplace mass matrix, automatic centring,
   levelled IC50s, anchors — every geometry change pkpd makes is under test).
4. **Ranks.** For each population-level quantity (``pop_*``, ``omega_*``, ``beta_*``,
   ``sigma_*``, and the correlations ``corr_<a>_<b>``/``corr_iov_<a>_<b>`` of a
   ``[correlation]``/``[correlation_iov]`` block) and the test quantities — the log-likelihood of the simulated data
   (``loglik``; Modrák et al. 2023, "Simulation-based calibration checking for Bayesian
   computation: the choice of test quantities shapes sensitivity", Bayesian Analysis) and the
   individual parameters of the first ``subjects`` subjects (``theta_<p>[ID]``) — the rank of
   the true value among ``ranks`` posterior draws thinned evenly from all chains: the number
   of draws below it (ties split at random).

Under a calibrated fit every quantity's ranks are uniform on ``0..ranks``; the verdicts use the
ECDF test with simultaneous bands of :mod:`pkpd.inference.calibration`. Thinned draws should be
close to independent: each replicate records each quantity's bulk ESS; when it is below the
number of ranks, autocorrelated draws make extreme ranks too rare and the test conservative
(a warning says so).

Each replicate is written to its own netCDF file as soon as it finishes, in the folder
``OUT.replicates`` next to the output (with the settings it ran with: a folder from other
settings is refused); the combined file is written last. Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from pkpd._files import atomic_write

#: How many times a replicate's prior draw is redrawn when its predictions are not finite.
MAX_ATTEMPTS = 100
SBC_MARKER = "pkpd_sbc"


class SBCError(ValueError):
    """An SBC run that cannot go on (bad settings, a replicate folder of other settings)."""


# -- the design and its prior draws -------------------------------------------------------------
def _prior_draws(spec, seed: int, indices):
    """Truth and simulated data of replicates ``indices``: ``{i: (values, parts, rejected)}``,
    ``values`` every site of the model (the simulated observations in ``y``), ``parts`` the
    residual model's arguments at the truth (predictions ``f``, ``kind``, ``additive``,
    ``proportional``, ``sigma``: what :func:`_loglik` needs) and ``rejected`` the number of
    draws redrawn."""
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    from pkpd.inference.model import build_model

    nm = build_model(dataclasses.replace(spec, parameterization="noncentered", centered=()))

    def draw(key):
        tr = handlers.trace(handlers.seed(nm, key)).get_trace()
        vals = {
            k: s["value"]
            for k, s in tr.items()
            if s["type"] in ("sample", "deterministic") and not s.get("is_observed", False)
        }
        fn = tr["y"]["fn"]
        parts = dict(
            f=fn.f, kind=fn.kind, additive=fn.additive, proportional=fn.proportional, sigma=fn.sigma
        )
        ok = jnp.all(jnp.isfinite(fn.f)) & jnp.all(jnp.isfinite(vals["y"]))
        return vals, parts, ok

    draw = jax.jit(draw)
    base = jax.random.PRNGKey(seed)
    out = {}
    for i in indices:
        key = jax.random.fold_in(base, i)
        for attempt in range(MAX_ATTEMPTS):
            vals, parts, ok = draw(jax.random.fold_in(key, attempt))
            if bool(ok):
                break
        else:
            raise SBCError(
                f"replicate {i}: {MAX_ATTEMPTS} prior draws in a row gave non-finite predictions; "
                "the priors put almost all their mass where the model fails (check them with "
                "pkpd.prior_predictive)"
            )
        out[i] = (
            {k: np.asarray(v) for k, v in vals.items()},
            {k: np.asarray(v) for k, v in parts.items()},
            attempt,
        )
    return out


def _replicate_dataset(spec, y: np.ndarray):
    """The design's dataset with the simulated observations (canonical units) in ``DV`` and
    ``BLQ`` set where a value is below its record's LLOQ."""
    d = spec.padded.data
    rows = np.asarray(d.point_row)[spec.obs_subject, spec.obs_point]
    rec = spec.dataset.records.copy()
    lloq = spec.obs_lloq
    blq = np.isfinite(lloq) & (y < lloq)
    dv = rec["DV"].to_numpy(dtype=float).copy()
    dv[rows] = y
    flags = rec["BLQ"].to_numpy(dtype=bool).copy()
    flags[rows] = blq
    rec["DV"] = dv
    rec["BLQ"] = flags
    # the values as given are the design's, not the replicate's: blank them
    if "DV_ORIG" in rec:
        rec["DV_ORIG"] = rec["DV_ORIG"].astype(object)
        rec.loc[rec.index[rows], "DV_ORIG"] = np.nan
    ds = dataclasses.replace(
        spec.dataset,
        records=rec,
        input_header=None,
        input_cells=None,
        source=f"SBC replicate of {spec.dataset.source or 'a design'}",
    )
    return ds, blq


def _loglik(y, blq, lloq, parts) -> float:
    import jax.numpy as jnp

    from pkpd.inference.likelihood import observed_values, pointwise_loglik

    obs = observed_values(y, lloq, blq)
    return float(
        jnp.sum(
            pointwise_loglik(
                jnp.asarray(obs),
                jnp.asarray(parts["f"]),
                jnp.asarray(parts["kind"]),
                jnp.asarray(parts["additive"]),
                jnp.asarray(parts["proportional"]),
                jnp.asarray(parts["sigma"]),
                jnp.asarray(lloq),
                jnp.asarray(blq),
            )
        )
    )


def _prepare(model, design, priors, options):
    """The fit spec of the design, with the fit options that shape it (covariates, endpoints)."""
    from pkpd.inference.spec import prepare

    return prepare(model, design, priors, covariates=options.get("covariates"),
                   endpoints=options.get("endpoints"))  # fmt: skip


# -- one replicate ------------------------------------------------------------------------------
def _thin(x: np.ndarray, n_ranks: int) -> np.ndarray:
    """``n_ranks - 1`` draws evenly spaced over ``x`` [chain, draw] (chains concatenated)."""
    flat = np.asarray(x).reshape(-1)
    idx = np.round(np.linspace(0, flat.size - 1, n_ranks - 1)).astype(int)
    return flat[idx]


def _rank(draws: np.ndarray, truth: float, rng: np.random.Generator) -> int:
    below = int(np.sum(draws < truth))
    ties = int(np.sum(draws == truth))
    return below + (int(rng.integers(0, ties + 1)) if ties else 0)


def _quantities(spec, values: dict, post, subjects: int) -> dict[str, tuple[float, np.ndarray]]:
    """``{quantity: (true value, posterior draws [chain, draw])}`` for one replicate, from its
    posterior (an InferenceData's ``posterior``, or a batch's draws as a dataset: variables
    named as the model's sites)."""
    from types import SimpleNamespace

    from pkpd.diagnostics.tables import population_variables

    out = {}
    for v in population_variables(SimpleNamespace(posterior=post)):
        if v in values:
            out[v] = (float(values[v]), np.asarray(post[v].values))
    # correlations of random effects ([correlation], [correlation_iov]): R = L L^T, the truth's
    # and each draw's (rows in the spec's order, as pkpd.diagnostics.tables.correlations reads)
    for site, names, prefix in (("corr_cholesky", spec.correlated, "corr_"),
                                ("corr_iov_cholesky", spec.iov_correlated, "corr_iov_")):  # fmt: skip
        if site not in values or site not in post:
            continue
        L = np.asarray(values[site], dtype=float)
        R = L @ L.T
        L_draws = np.asarray(post[site].values, dtype=float)  # [chain, draw, k, k]
        R_draws = L_draws @ np.swapaxes(L_draws, -1, -2)
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                out[f"{prefix}{names[i]}_{names[j]}"] = (float(R[i, j]), R_draws[..., i, j])
    ids = list(spec.padded.subject_ids)
    for p in spec.estimated:
        name = f"theta_{p}"
        if name not in post or name not in values:
            continue
        t = np.asarray(values[name])
        d = post[name].values
        for k in range(min(subjects, len(ids))):
            tk = t[k] if t.ndim == 1 else t[k, 0]
            dk = d[:, :, k] if d.ndim == 3 else d[:, :, k, 0]
            out[f"{name}[{ids[k]}]"] = (float(tk), dk)
    return out


#: The design's columns a replicate depends on (with the covariates): not DV and BLQ.
DESIGN_COLUMNS = ("ID", "STUDY", "TIME", "EVID", "AMT", "RATE", "DUR", "CMT", "II", "ADDL", "SS",
                  "MDV", "LLOQ", "ENDPOINT", "OCC")  # fmt: skip


def _settings(spec, *, seed, chains, warmup, draws, n_ranks, method, parameterization, subjects,
              fit_options):  # fmt: skip
    rec = spec.dataset.records
    cols = [c for c in (*DESIGN_COLUMNS, *spec.dataset.covariates) if c in rec]
    h = hashlib.sha256(rec[cols].to_csv(index=False).encode()).hexdigest()[:16]
    return dict(
        model=spec.model.name,
        priors_sha256=hashlib.sha256(
            json.dumps(spec.priors.raw, sort_keys=True).encode()
        ).hexdigest()[:16],
        design_sha256=h,
        seed=int(seed),
        chains=int(chains),
        warmup=int(warmup),
        draws=int(draws),
        ranks=int(n_ranks - 1),
        method=method,
        parameterization=parameterization,
        subjects=int(subjects),
        fit_options=json.loads(json.dumps(fit_options, sort_keys=True, default=str)),
    )


def _run_replicate(i, spec, prior, settings, fit_options) -> xr.Dataset:
    from pkpd.inference.fit import fit

    values, parts, rejected = prior
    y = values["y"]
    ds, blq = _replicate_dataset(spec, y)
    fit_seed = int(np.random.SeedSequence([settings["seed"], i]).generate_state(1)[0])
    clock = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = fit(
            spec.model,
            ds,
            spec.priors,
            chains=settings["chains"],
            warmup=settings["warmup"],
            draws=settings["draws"],
            seed=fit_seed,
            method=settings["method"],
            parameterization=settings["parameterization"],
            progress_bar=False,
            **fit_options,
        )
    seconds = time.perf_counter() - clock
    q = _quantities(spec, values, idata.posterior, settings["subjects"])
    ll_post = idata.log_likelihood["y"].sum("obs").values
    q["loglik"] = (_loglik(y, blq, spec.obs_lloq, parts), ll_post)
    stats = idata.get("sample_stats")
    div = int(stats["diverging"].values.sum()) if stats is not None and "diverging" in stats else 0
    return _replicate_result(i, q, settings, div, int(blq.sum()), rejected, seconds, fit_seed)


def _replicate_result(i, q, settings, div, n_blq, rejected, seconds, fit_seed) -> xr.Dataset:
    """One replicate's dataset from its quantities ``{name: (truth, draws [chain, draw])}``."""
    from pkpd.diagnostics.tables import _ess, _rhat

    n_ranks = settings["ranks"] + 1
    rng = np.random.default_rng([settings["seed"], i, 1])

    names = list(q)
    rank, truth, mean, sd, ess, rhat = [], [], [], [], [], []
    for name in names:
        t, d = q[name]
        rank.append(_rank(_thin(d, n_ranks), t, rng))
        truth.append(t)
        mean.append(float(np.mean(d)))
        sd.append(float(np.std(d)))
        da = xr.DataArray(d, dims=("chain", "draw"))
        ess.append(_ess(da, "bulk"))
        rhat.append(_rhat(da))
    qd = ("quantity",)
    return xr.Dataset(
        {
            "rank": (qd, np.asarray(rank, dtype=np.int64)),
            "true_value": (qd, np.asarray(truth)),
            "posterior_mean": (qd, np.asarray(mean)),
            "posterior_sd": (qd, np.asarray(sd)),
            "ess_bulk": (qd, np.asarray(ess)),
            "rhat": (qd, np.asarray(rhat)),
            "divergences": ((), div),
            "n_blq": ((), int(n_blq)),
            "rejected_prior_draws": ((), int(rejected)),
            "fit_seconds": ((), float(seconds)),
            "fit_seed": ((), np.int64(fit_seed)),
        },
        coords={"quantity": names},
        attrs={"replicate": int(i), "settings": json.dumps(settings, sort_keys=True)},
    )


# -- replicates batched in one program ------------------------------------------------------------
#: fit options a batched run takes (NUTS settings and what shapes the spec)
BATCH_OPTIONS = ("covariates", "endpoints", "target_accept", "max_tree_depth")


def _check_batch(spec, method, parameterization, fit_options) -> None:
    problems = []
    if method != "nuts":
        problems.append(f'method="{method}" (a batch runs NUTS)')
    if parameterization not in ("noncentered", "centered"):
        problems.append(
            f'parameterization="{parameterization}" (a batch has no MAP start for "auto" to '
            'choose from: give parameterization="centered" or "noncentered")'
        )
    if np.any(np.isfinite(spec.obs_lloq)):
        problems.append("a design with LLOQs (censoring differs between replicates)")
    if spec.aggregate is not None:
        problems.append("published summaries (aggregate=)")
    other = sorted(set(fit_options) - set(BATCH_OPTIONS))
    if other:
        problems.append(
            f"fit options {', '.join(other)} (a batch takes {', '.join(BATCH_OPTIONS)})"
        )
    if problems:
        raise SBCError("batch= cannot run " + "; ".join(problems) + "; run without batch=")


def _run_batch(indices, spec, prior, settings, fit_options) -> dict[int, xr.Dataset]:
    """Replicates ``indices`` in one compiled program: NumPyro's NUTS on the model with every
    subject effect non-centred (or centred), the chains of every replicate vectorised
    (``vmap``) with each replicate's observations as that lane's argument; each chain starts
    at the prior medians (``init_to_median``: the median of 15 prior draws, so chains start
    apart), its step size and diagonal mass matrix adapted in the warmup. NumPyro's default
    start (uniform in [-2, 2] on the unconstrained scale: V near 1 L where the prior says 50)
    left chains stuck: 10 of 13 quantities miscalibrated on the test design
    (benchmarks/RESULTS.md). Every lane's random key comes from the replicate's seed and the
    chain's index, so a replicate's draws do not depend on which batch it ran in (checked:
    4 replicates in one batch of 4 or two of 2 give identical draws)."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC, NUTS, init_to_median

    from pkpd.inference.fit import _data_as_arguments, centrable_parameters
    from pkpd.inference.likelihood import observed_values
    from pkpd.inference.model import build_model

    param = settings["parameterization"]
    centred = centrable_parameters(spec) if param == "centered" else ()  # as pkpd.fit does
    nm = build_model(dataclasses.replace(spec, parameterization=param, centered=centred))
    C = settings["chains"]
    obs = [observed_values(prior[i][0]["y"], spec.obs_lloq, spec.obs_blq) for i in indices]
    obs_lanes = jnp.asarray(np.repeat(np.stack([np.asarray(o) for o in obs]), C, axis=0))
    seeds = {i: int(np.random.SeedSequence([settings["seed"], i]).generate_state(1)[0])
             for i in indices}  # fmt: skip
    keys = jnp.stack(
        [jax.random.fold_in(jax.random.PRNGKey(seeds[i]), c) for i in indices for c in range(C)]
    )

    def lanes(one_chain):
        split = _data_as_arguments(one_chain)
        if split is None:  # pragma: no cover - a NumPyro that runs chains otherwise
            raise SBCError("this NumPyro version does not pass the observations per chain")
        run, (kwargs, inverse_mass) = split
        lane = lambda a, o: run(a, {**kwargs, "obs": o}, inverse_mass)  # noqa: E731
        vmapped = jax.jit(jax.vmap(lane))
        return lambda map_args: vmapped((keys, *map_args[1:]), obs_lanes)

    kernel = NUTS(
        nm,
        init_strategy=init_to_median(num_samples=15),
        target_accept_prob=fit_options.get("target_accept", 0.8),
        max_tree_depth=fit_options.get("max_tree_depth", 10),
    )
    mcmc = MCMC(kernel, num_warmup=settings["warmup"], num_samples=settings["draws"],
                num_chains=len(indices) * C, chain_method=lanes, progress_bar=False,
                jit_model_args=True)  # fmt: skip
    clock = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc.run(jax.random.PRNGKey(settings["seed"]), obs=jnp.asarray(obs[0]),
                 extra_fields=("diverging",))  # fmt: skip
        samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    diverging = np.asarray(mcmc.get_extra_fields(group_by_chain=True)["diverging"])
    seconds = (time.perf_counter() - clock) / len(indices)
    out = {}
    for r, i in enumerate(indices):
        values, _, rejected = prior[i]
        sl = slice(r * C, (r + 1) * C)
        mine = {k: v[sl] for k, v in samples.items()}
        post = xr.Dataset(
            {
                k: (("chain", "draw", *[f"{k}_dim_{j}" for j in range(v.ndim - 2)]), v)
                for k, v in mine.items()
            }  # fmt: skip
        )
        q = _quantities(spec, values, post, settings["subjects"])
        # no LLOQs in a batched design (_check_batch): nothing censored
        out[i] = _replicate_result(i, q, settings, int(diverging[sl].sum()), 0, rejected,
                                   seconds, seeds[i])  # fmt: skip
    return out


# -- the run ------------------------------------------------------------------------------------
def sbc(
    model,
    design,
    priors=None,
    *,
    n: int = 100,
    chains: int = 2,
    warmup: int = 250,
    draws: int = 250,
    ranks: int = 99,
    seed: int = 0,
    method: str = "nuts",
    parameterization: str = "auto",
    subjects: int = 3,
    out=None,
    alpha: float = 0.05,
    workers: int = 1,
    batch: int | None = None,
    progress: bool = True,
    **fit_options,
) -> xr.Dataset:
    """Simulation-based calibration of ``model`` with ``priors`` on ``design``.

    Parameters
    ----------
    model : str or model object
        As for :func:`pkpd.fit` (a registered name, a model object, a model file's path).
    design : Dataset, path or DataFrame
        The trial to simulate: its doses, sampling times, covariates, endpoints and LLOQs are
        kept; its ``DV`` values are ignored (any value will do, e.g. the real data's).
    priors : path, Priors or None
        The priors data are drawn from and fitted with (``None``: the model's bundled ones).
        SBC needs priors that generate plausible data: check them first with
        :func:`prior_predictive` (``pkpd sbc --prior-check``).
    n : int
        Replicates (each a full fit). 50 show gross miscalibration; 200+ for a recorded run.
    chains, warmup, draws, seed, method, parameterization
        The fit's settings (:func:`pkpd.fit`); every replicate's fit gets its own seed derived
        from ``seed`` and its index.
    ranks : int
        Posterior draws each rank is computed against (thinned evenly from the
        ``chains * draws``): ranks run ``0..ranks``.
    subjects : int
        Test quantities: the individual parameters of the first ``subjects`` subjects.
    out : path, optional
        The combined netCDF file; each replicate is also written as it finishes to
        ``<out>.replicates/replicate_<i>.nc``, and a rerun with the same settings reuses the
        replicates found there (resume after an interruption, or extend with a larger ``n``).
    alpha : float
        Level of each quantity's uniformity test (the band is simultaneous over the ranks of a
        quantity; the verdict is Bonferroni-corrected over quantities, see below).
    workers : int
        Replicates fitted at once, each in its own process (spawned, sharing the compilation
        cache). On a 2-core machine 2 workers gained only ~10% (one fit already keeps both
        cores busy; benchmarks/RESULTS.md); they pay on machines with more cores. The model is sent by name or file path when given so, else
        pickled (between processes only; nothing is written as pickle).
    batch : int, optional
        Replicates run together in one compiled program (:func:`_run_batch`): NumPyro's NUTS on
        the model with the chains of ``batch`` replicates vectorised, instead of one
        :func:`pkpd.fit` per replicate. Faster on small models (the 10-subject one-compartment
        design, 50 replicates × 2 × (150 + 150): 162 s on 2 cores against ~10 minutes), but it
        checks the model, the priors and NUTS, not the fit's own start (MAP), initial mass
        matrix (Laplace) and centring choice. Needs ``method="nuts"``,
        ``parameterization="noncentered"`` or ``"centered"``, a design without LLOQs, and only
        the fit options :data:`BATCH_OPTIONS`. Recorded in the settings (``batched``).
    **fit_options
        Passed to :func:`pkpd.fit` (``covariates``, ``endpoints``, ``target_accept``, ...).

    Returns
    -------
    xarray.Dataset
        Dims ``replicate`` × ``quantity``: ``rank``, ``true_value``, ``posterior_mean``,
        ``posterior_sd``, ``ess_bulk``, ``rhat``; per replicate ``divergences``, ``n_blq``,
        ``rejected_prior_draws``, ``fit_seconds``, ``fit_seed``; per quantity ``p_value`` (the
        ECDF test of :mod:`pkpd.inference.calibration`), ``chi_square_p_value`` (the rank
        histogram's) and ``verdict`` (``"calibrated"`` or ``"suspicious"``: the ECDF test's
        p-value below ``alpha`` divided by the number of quantities); the band in
        ``band_lower``/``band_upper`` on ``ecdf_point``; settings in ``attrs``.
    """
    from pkpd._xla import require_x64

    require_x64("pkpd.sbc")
    for name, v, low in (("n", n, 2), ("chains", chains, 1), ("draws", draws, 1),
                         ("warmup", warmup, 0), ("ranks", ranks, 1), ("subjects", subjects, 0),
                         ("workers", workers, 1), ("batch", 1 if batch is None else batch, 1)):  # fmt: skip
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise SBCError(f"{name}={v!r}; expected a whole number >= {low}")
    if chains * draws < ranks:
        raise SBCError(
            f"ranks={ranks} needs at least that many posterior draws; chains x draws is "
            f"{chains * draws}"
        )
    if not 0 < alpha < 1:
        raise SBCError(f"alpha={alpha!r}; expected a number between 0 and 1")
    spec = _prepare(model, design, priors, fit_options)
    if batch is not None:
        _check_batch(spec, method, parameterization, fit_options)
    n_ranks = ranks + 1
    settings = _settings(
        spec,
        seed=seed,
        chains=chains,
        warmup=warmup,
        draws=draws,
        n_ranks=n_ranks,
        method=method,
        parameterization=parameterization,
        subjects=subjects,
        fit_options=fit_options,
    )
    if batch is not None:
        settings["batched"] = True
    folder = None if out is None else Path(str(out) + ".replicates")
    done: dict[int, xr.Dataset] = {}
    if folder is not None and folder.exists():
        done = _read_replicates(folder, settings, n)
    todo = [i for i in range(n) if i not in done]
    if progress and done:
        print(f"pkpd sbc: {len(done)} replicate(s) found in {folder}, {len(todo)} to run",
              file=sys.stderr)  # fmt: skip
    priors_drawn = _prior_draws(spec, seed, todo)

    def finished(i, rep, count):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(folder / f"replicate_{i:05d}.nc", lambda tmp: rep.to_netcdf(tmp))
        done[i] = rep
        if progress:
            print(
                f"pkpd sbc: replicate {i + 1} ({count}/{len(todo)} this run) in "
                f"{float(rep['fit_seconds']):.1f} s, {int(rep['divergences'])} divergence(s)",
                file=sys.stderr,
            )

    with _compilation_cache():
        if batch is not None:
            count = 0
            for start in range(0, len(todo), batch):
                for i, rep in _run_batch(todo[start : start + batch], spec, priors_drawn,
                                         settings, fit_options).items():  # fmt: skip
                    count += 1
                    finished(i, rep, count)
        elif workers == 1 or len(todo) <= 1:
            for count, i in enumerate(todo, 1):
                rep = _run_replicate(i, spec, priors_drawn[i], settings, fit_options)
                finished(i, rep, count)
        else:
            _run_in_processes(
                todo, workers, model, spec, priors_drawn, settings, fit_options, finished
            )
    result = combine([done[i] for i in range(n)], alpha=alpha, settings=settings, spec=spec)
    if out is not None:
        atomic_write(out, lambda tmp: result.to_netcdf(tmp))
    return result


@contextlib.contextmanager
def _compilation_cache():
    """JAX's persistent compilation cache on for the run when no folder is set: every
    replicate's fit compiles the same programs (the observations and the initial mass matrix
    are their arguments, not constants), so all but the first load them from disk
    (:func:`pkpd._xla.enable_compilation_cache`); the setting is undone after the run."""
    import jax

    if jax.config.jax_compilation_cache_dir:
        yield
        return
    from pkpd._xla import enable_compilation_cache

    where = enable_compilation_cache()
    try:
        yield
    finally:
        if where is not None:
            jax.config.update("jax_compilation_cache_dir", None)
            try:
                from jax._src import compilation_cache

                compilation_cache.reset_cache()
            except Exception:  # noqa: BLE001 - a JAX without it: the setting alone
                pass


# -- replicates in other processes ----------------------------------------------------------------
_WORKER: dict = {}


def _start_worker(model_ref, dataset, priors, fit_options, cache_dir) -> None:
    """Each worker process prepares the design's spec once (``pkpd`` import sets float64) and
    shares the parent's compilation cache."""
    import pkpd  # noqa: F401 - float64 and the XLA flags before JAX starts
    from pkpd._xla import enable_compilation_cache
    from pkpd.models import load_model

    if cache_dir:
        enable_compilation_cache(cache_dir)
    model = load_model(model_ref) if isinstance(model_ref, str) else model_ref
    _WORKER["spec"] = _prepare(model, dataset, priors, fit_options)
    _WORKER["fit_options"] = fit_options


def _worker_replicate(i, prior, settings) -> xr.Dataset:
    return _run_replicate(i, _WORKER["spec"], prior, settings, _WORKER["fit_options"])


def _run_in_processes(todo, workers, model, spec, priors_drawn, settings, fit_options, finished):
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import jax

    model_ref = str(model) if isinstance(model, str | os.PathLike) else spec.model
    cache_dir = jax.config.jax_compilation_cache_dir
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(todo)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(model_ref, spec.dataset, spec.priors, fit_options, cache_dir),
    )
    try:
        futures = {pool.submit(_worker_replicate, i, priors_drawn[i], settings): i for i in todo}
        for count, fut in enumerate(as_completed(futures), 1):
            i = futures[fut]
            try:
                rep = fut.result()
            except Exception as e:  # noqa: BLE001 - say which replicate failed
                raise SBCError(
                    f"replicate {i} failed in its worker: {type(e).__name__}: {e}"
                ) from e
            finished(i, rep, count)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _read_replicates(folder: Path, settings: dict, n: int) -> dict[int, xr.Dataset]:
    found = {}
    for f in sorted(folder.glob("replicate_*.nc")):
        with xr.open_dataset(f) as d:
            rep = d.load()
        theirs = json.loads(rep.attrs.get("settings", "{}"))
        if theirs != settings:
            diff = sorted(
                k for k in set(theirs) | set(settings) if theirs.get(k) != settings.get(k)
            )
            raise SBCError(
                f"{f} was run with other settings ({', '.join(diff)} differ); use another --out "
                "or remove that folder"
            )
        i = int(rep.attrs["replicate"])
        if i < n:
            found[i] = rep
    return found


def combine(replicates, *, alpha: float = 0.05, settings: dict | None = None, spec=None):
    """The SBC result of per-replicate datasets: ranks stacked, tests and verdicts added."""
    from pkpd.inference.calibration import (
        chi_square_p_value,
        simultaneous_band,
        uniformity_p_value,
    )

    quantities = list(replicates[0]["quantity"].values)
    for r in replicates[1:]:
        if list(r["quantity"].values) != quantities:
            raise SBCError("replicates do not share their quantities; rerun with one --out")
    data = xr.concat(replicates, dim="replicate", combine_attrs="drop")
    data = data.assign_coords(replicate=[int(r.attrs["replicate"]) for r in replicates])
    n = data.sizes["replicate"]
    settings = settings or json.loads(replicates[0].attrs["settings"])
    n_ranks = settings["ranks"] + 1
    band = simultaneous_band(n, n_ranks, alpha=alpha, seed=settings.get("seed", 0))
    p = [uniformity_p_value(data["rank"].sel(quantity=q).values, band) for q in quantities]
    chi = [chi_square_p_value(data["rank"].sel(quantity=q).values, n_ranks) for q in quantities]
    level = alpha / len(quantities)
    verdict = ["suspicious" if pv < level else "calibrated" for pv in p]
    data["p_value"] = ("quantity", np.asarray(p))
    data["chi_square_p_value"] = ("quantity", np.asarray(chi))
    data["verdict"] = ("quantity", np.asarray(verdict, dtype=object).astype(str))
    data["band_z"] = ("ecdf_point", band.z)
    data["band_lower"] = ("ecdf_point", band.lower)
    data["band_upper"] = ("ecdf_point", band.upper)
    low_ess = data["ess_bulk"] < settings["ranks"]
    data.attrs = {
        SBC_MARKER: 1,
        "settings": json.dumps(settings, sort_keys=True),
        "ranks": int(settings["ranks"]),
        "alpha": float(alpha),
        "band_gamma": band.gamma,
        "test": (
            "ECDF of the ranks against simultaneous 1-alpha bands (Sailynoja, Burkner & Vehtari "
            "2022, Stat Comput 32:32), Monte Carlo p-value from 4000 uniform rank samples; "
            f"verdict 'suspicious' when p < alpha / {len(quantities)} quantities (Bonferroni)"
        ),
        "low_ess_share": float(low_ess.mean()),
    }
    if spec is not None:
        data.attrs["model"] = spec.model.name
        data.attrs["priors_toml"] = spec.priors.text or ""
        data.attrs["design_source"] = str(spec.dataset.source or "")
    return data


def prior_predictive(model, design, priors=None, *, n: int = 200, seed: int = 0, **options):
    """Data simulated on ``design`` from parameters drawn from the priors: what SBC fits.

    Draws are made as :func:`sbc` makes them (replicate ``i`` of ``seed`` is the same data);
    use it before SBC (or a fit) to see whether the priors generate plausible data: values
    spanning many decades, most observations below the LLOQ, or many rejected draws
    (non-finite predictions) mean the priors are too wide for SBC (a fit may still be fine
    with them when the data are rich; SBC needs every prior draw to give data a fit can
    learn from).

    Returns
    -------
    xarray.Dataset
        ``y`` [draw, obs] simulated observations (canonical units, uncensored), ``blq``
        [draw, obs] (below the record's LLOQ), ``prediction`` [draw, obs] (without residual
        error), every population-level value drawn (``pop_*``, ``omega_*``, ``sigma_*``,
        ``beta_*``) [draw], ``rejected_draws`` [draw]; per observation ``endpoint``,
        ``subject``, ``time`` (h), ``lloq`` and the design's ``dv``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SBCError(f"n={n!r}; expected a whole number >= 1")
    spec = _prepare(model, design, priors, options)
    draws = _prior_draws(spec, seed, range(n))
    first = draws[0][0]
    scalars = sorted(
        k for k, v in first.items()
        if np.ndim(v) == 0 and k.startswith(("pop_", "omega_", "sigma_", "beta_"))
        and not k.endswith(("_fraction", "_level", "_anchor"))
    )  # fmt: skip
    y = np.stack([draws[i][0]["y"] for i in range(n)])
    f = np.stack([draws[i][1]["f"] for i in range(n)])
    lloq = spec.obs_lloq
    data = {
        "y": (("draw", "obs"), y),
        "prediction": (("draw", "obs"), f),
        "blq": (("draw", "obs"), np.isfinite(lloq) & (y < lloq)),
        "rejected_draws": ("draw", np.asarray([draws[i][2] for i in range(n)])),
        "endpoint": ("obs", np.asarray([spec.endpoints[j] for j in spec.obs_endpoint])),
        "subject": ("obs", np.asarray([str(spec.padded.subject_ids[s]) for s in spec.obs_subject])),
        "time": ("obs", spec.obs_time),
        "lloq": ("obs", lloq),
        "dv": ("obs", np.where(spec.obs_blq, np.nan, spec.obs_y)),
    }
    for k in scalars:
        data[k] = ("draw", np.asarray([float(draws[i][0][k]) for i in range(n)]))
    return xr.Dataset(data, attrs={"model": spec.model.name, "seed": int(seed)})


def prior_predictive_table(pp: xr.Dataset) -> pd.DataFrame:
    """Per endpoint: the simulated observations' 5/50/95% quantiles, the design data's (where
    it has values), the decades the simulated medians of the draws span, the share below the
    LLOQ and the share of rejected draws."""

    rows = []
    for e in pd.unique(pp["endpoint"].values):
        sel = pp["endpoint"].values == e
        y = pp["y"].values[:, sel]
        med = np.median(y, axis=1)
        pos = med[med > 0]
        dv = pp["dv"].values[sel]
        dv = dv[np.isfinite(dv)]
        q = np.quantile(y, [0.05, 0.5, 0.95])
        rows.append(
            {
                "endpoint": str(e),
                "simulated 5%": q[0],
                "simulated median": q[1],
                "simulated 95%": q[2],
                "data 5%": np.quantile(dv, 0.05) if dv.size else np.nan,
                "data median": np.median(dv) if dv.size else np.nan,
                "data 95%": np.quantile(dv, 0.95) if dv.size else np.nan,
                "decades spanned by draws' medians": (
                    float(np.log10(pos.max() / pos.min())) if pos.size > 1 else np.nan
                ),
                "% below LLOQ": 100.0 * float(pp["blq"].values[:, sel].mean()),
                "% draws rejected": 100.0 * float((pp["rejected_draws"].values > 0).mean()),
            }
        )
    return pd.DataFrame(rows)


def load_sbc(path) -> xr.Dataset:
    """An SBC result written by :func:`sbc` (or ``pkpd sbc``)."""
    from pkpd._files import read_marked

    def read(p):
        with xr.open_dataset(p) as d:
            return d.load()

    return read_marked(path, read, marker=SBC_MARKER, what="SBC result", writer="pkpd sbc",
                       error=SBCError)  # fmt: skip


__all__ = ["SBCError", "combine", "load_sbc", "prior_predictive", "sbc"]
