r"""The likelihood of published arm-level summaries (:mod:`pkpd.data.aggregate`) in a fit.

Each arm is simulated inside the model, at the parameters of the current draw: ``M`` virtual
subjects (``n_virtual``) with the arm's regimen and covariates, the arm's own study effect (a
study of the individual data, or a study of its own), and subject effects
:math:`\eta_{p,m} = \omega_p \xi_{p,m}` from standard normals :math:`\xi` drawn once, before
the fit, and held fixed, so the log density stays a smooth function of the parameters (NUTS
needs that; Weber et al., "Bayesian aggregation of average data", Ann. Appl. Stat. 12, 2018,
the same device). Each arm's normals are standardised to mean 0 and SD 1 per parameter, which
removes most of the Monte Carlo error of the predicted mean. Concentrations, Cmax, Ctrough and
AUCs come from the simulation engines (:mod:`pkpd.simulate.engines`: exact step by step for
linear PK, the model's ``predict`` otherwise), on the same grids as :func:`pkpd.simulate`.

For each summary row the virtual subjects' values :math:`v_m` (each subject's metric, or the
ratio of two endpoints' metrics) give, on the log scale for a geometric mean or a median of a
positive metric (log-normal between subjects) and on the natural scale otherwise,

* the predicted mean :math:`\hat\mu` and between-subject SD :math:`\hat\sigma` of
  :math:`x_m` (= :math:`v_m` or :math:`\log v_m`);
* the published statistic :math:`y` (or :math:`\log y`) ~ :math:`N(\hat\mu, \hat\sigma/\sqrt n)`
  (central limit theorem; for a median :math:`\hat\sigma\sqrt{\pi/2}/\sqrt n`, the asymptotic SE
  of a normal sample's median). This is the approximation that breaks first for small ``n``
  with skewed values on the natural scale: give geometric means where the publication has them;
* the statistics of one arm's rows jointly Gaussian (Weber et al. 2018 likewise): summaries
  of the same subjects (Cmax and AUC, two analytes' AUCs, their ratio) are correlated as
  their virtual values are, :math:`\rho_{ij}` between :math:`x_{i,m}` and :math:`x_{j,m}`;
  the correlation of two sample means is :math:`\rho`, of a mean and a median
  :math:`\rho\sqrt{2/\pi}`, of two medians :math:`(2/\pi)\arcsin\rho` (normal samples,
  asymptotically), times :math:`\sqrt{n_{min}/n_{max}}` when the rows have different N (the
  smaller sample taken as part of the larger). Correlations are shrunk by
  :data:`JOINT_SHRINK` toward 0, so the law stays proper where one summary is a function of
  others (the geometric means of two AUCs and of their ratio: singular without it). Rows
  taken as independent would count what correlated summaries share more than once. The
  published spreads below are taken as independent of the statistics (exact for normal
  values: a sample's mean and variance are independent) and of each other (an
  approximation);
* with a published spread, its square :math:`s^2` ~ Gamma with mean :math:`\hat\sigma^2` and
  variance :math:`\hat\sigma^4 (2/(n-1) + \hat\kappa/n)`, :math:`\hat\kappa` the virtual
  subjects' excess kurtosis (0 on the log scale: exactly :math:`\chi^2_{n-1}` scaled for normal
  values). SD, SE (:math:`s = SE\sqrt n`) and CV (:math:`s = CV \cdot y`) on the natural scale;
  a geometric CV (:math:`s = \sqrt{\log(1 + CV^2)}`) or an SD of logs on the log scale.

What is not modelled: the residual (assay) error (a mean of observed values equals the mean of
the true ones under additive or proportional error; the spread of observed values is slightly
larger than predicted), inter-occasion variability (virtual subjects have one occasion), and
the spread of covariates within an arm (every virtual subject has the arm's value).

Monte Carlo error. The predicted mean of ``M`` virtual subjects is off by about
:math:`\hat\sigma/\sqrt M` (less after standardising the normals), against the summary's own
SE :math:`\hat\sigma/\sqrt n`: the ratio :math:`\sqrt{n/M}` is recorded per row, and the fit
warns when it exceeds :data:`MC_RATIO_WARN` (raise ``n_virtual``). Doubling ``n_virtual``
must move the posterior by no more than its Monte Carlo error (tests).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from pkpd.data.aggregate import AggregateData

#: Virtual subjects per arm when ``n_virtual`` is not given: ``max(DEFAULT_MIN, 25 × the
#: largest N)`` (Monte Carlo SE at most 1/5 of the summaries' SE), at most DEFAULT_MAX.
DEFAULT_MIN, DEFAULT_MAX = 200, 4000
#: The fit warns when a row's Monte Carlo SE exceeds this fraction of its summary's SE.
MC_RATIO_WARN = 0.25
#: Shrinkage of the correlations between the statistics of one arm toward 0 (module
#: docstring): keeps the joint law proper when one summary is a function of others.
JOINT_SHRINK = 0.05
#: Seed of the virtual subjects' fixed normals (``aggregate_seed`` of :func:`pkpd.fit`).
DEFAULT_SEED = 20181


class AggregateWarning(UserWarning):
    """The virtual subjects are too few for a summary's precision (Monte Carlo error)."""


def default_virtual(agg: AggregateData) -> int:
    n = max(r.n for r in agg.rows)
    return int(min(DEFAULT_MAX, max(DEFAULT_MIN, 25 * n)))


@dataclass
class AggregateSetup:
    """Everything static the aggregate likelihood needs (host arrays), built once per fit."""

    data: AggregateData
    n_virtual: int
    seed: int
    arms: list[tuple[str, str]]
    arm_study: np.ndarray  # [A] index into the fit's studies
    engine: object
    grid: dict  # arrays [A, ...]
    window: int
    amounts: np.ndarray  # [A, D] mg
    effect_values: dict  # effect name -> [A]
    xi: np.ndarray  # [A, M, k] fixed standard normals (k: parameters with subject effects)
    independent: list[str]
    correlated: list[str]
    catalogue: dict
    rows: list[dict]  # per summary row: how to read its values

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.data.rows]

    def mc_ratio(self) -> np.ndarray:
        """Per row: Monte Carlo SE of the predicted summary over its sampling SE, sqrt(n/M)."""
        return np.sqrt(np.array([r.n for r in self.data.rows], float) / self.n_virtual)


def _standard_normals(rng, A, M, k) -> np.ndarray:
    xi = rng.standard_normal((A, M, max(k, 1)))
    xi = (xi - xi.mean(axis=1, keepdims=True)) / xi.std(axis=1, ddof=1, keepdims=True)
    return xi[..., :k]


def setup(spec, agg: AggregateData, *, n_virtual=None, seed: int = DEFAULT_SEED) -> AggregateSetup:
    """Lay out ``agg`` (checked against the spec's model) for the fit of ``spec``: grids,
    doses, covariates and fixed normals of every arm. Raises FitError for what cannot be
    simulated (a covariate an effect needs missing from an arm, a route the model cannot take)."""
    from pkpd.inference.hierarchy import subject_effect_parameters
    from pkpd.inference.spec import FitError
    from pkpd.regimen import Regimen
    from pkpd.simulate.engines import ModalEngine, PredictEngine, metric_times
    from pkpd.simulate.errors import SimulationError
    from pkpd.simulate.plan import build_grid, default_horizon, plan_regimen, with_model_route

    model = spec.model
    M = default_virtual(agg) if n_virtual is None else int(n_virtual)
    if M < 10:
        raise FitError(f"aggregate_virtual={n_virtual!r}: at least 10 virtual subjects per arm")
    studies = spec.study_names
    arms = agg.arms
    first = {}
    for r in agg.rows:
        first.setdefault((r.study, r.arm), r)
    problems = []
    endpoints = sorted({e for r in agg.rows for e in r.endpoints}, key=spec.model.endpoints.index)
    # the arms' plans and grids
    plans, horizons, times = [], [], []
    for key in arms:
        r = first[key]
        try:
            reg = with_model_route(f"{r.study}/{r.arm}", Regimen(r.regimen), model)
            horizon = r.horizon_h if r.horizon_h is not None else default_horizon([reg])
            plan = plan_regimen(f"{r.study}/{r.arm}", reg, horizon)
        except SimulationError as e:
            problems.append(f"line {r.line}, column REGIMEN: {e}")
            continue
        rows = [x for x in agg.rows if (x.study, x.arm) == key]
        for x in rows:
            if x.metric == "auc_0_inf" and plan.n_doses != 1:
                problems.append(
                    f"line {x.line}, column METRIC: auc_0_inf is read after a single dose; arm "
                    f"{x.study}/{x.arm} has {plan.n_doses} (give auc_tau of a dosing interval)"
                )
            if x.time_h is not None and x.time_h > horizon:
                problems.append(
                    f"line {x.line}, column TIME_H: {x.time_h:g} h is past the arm's horizon "
                    f"{horizon:g} h (give HORIZON_H)"
                )
        plans.append(plan)
        horizons.append(horizon)
        times.append(sorted({0.0, 0.75 * horizon, horizon} | {x.time_h for x in rows if x.time_h}))
    for eff in spec.effects:
        col = eff.covariate.upper()
        for key in arms:
            if col not in first[key].covariates:
                problems.append(
                    f"line {first[key].line}: arm {key[0]}/{key[1]} gives no {col}, which the "
                    f"covariate effect {eff.name} needs (add a column {col}: the arm's median)"
                )
    if problems:
        raise FitError("aggregate data: " + "; ".join(problems))
    params_used = list(spec.estimated) + list(spec.fixed)
    engine = (
        ModalEngine(model, endpoints)
        if ModalEngine.supports(model, params_used)
        else PredictEngine(model, endpoints)
    )
    grids = [
        build_grid(
            [p],
            h,
            np.asarray(t, float),
            metric_times(engine.model, endpoints, h),
            full=engine.full_grid,
        )
        for p, h, t in zip(plans, horizons, times, strict=True)
    ]
    grid = _stack(grids)
    if isinstance(engine, ModalEngine):
        engine.boluses = bool(grid["bolus"].any())
    window = int(np.max(grid["win"][:, :, 1] - grid["win"][:, :, 0])) + 1
    D = grid["dose_time"].shape[1]
    amounts = np.zeros((len(arms), D))
    for a, (key, plan) in enumerate(zip(arms, plans, strict=True)):
        table = pd.DataFrame([first[key].covariates])
        amounts[a, : plan.n_doses] = plan.amounts_mg(table)[0]
    effect_values = {
        eff.name: np.array([first[k].covariates[eff.covariate.upper()] for k in arms], float)
        for eff in spec.effects
    }
    independent, correlated = subject_effect_parameters(spec)
    k = len(independent) + len(correlated)
    xi = _standard_normals(np.random.default_rng(seed), len(arms), M, k)
    catalogue, rows = {}, []
    for r in agg.rows:
        a = arms.index((r.study, r.arm))
        names = []
        for e in r.endpoints:
            if r.metric in ("cmax", "ctrough", "auc_tau"):
                kind = "auc" if r.metric == "auc_tau" else r.metric
                name = f"{r.metric}_{e}_{r.window}"
                catalogue[name] = dict(endpoint=e, kind=kind, window=r.window)
            elif r.metric == "auc_0_inf":
                name = f"auc_tau_{e}_c1"
                catalogue[name] = dict(endpoint=e, kind="auc", window="c1")
            else:
                name = None
            if name is not None:
                # metrics_and_profiles reads the intervals of the endpoints that have a Cmax
                catalogue.setdefault(f"cmax_{e}_c1", dict(endpoint=e, kind="cmax", window="c1"))
            names.append(name)
        t_arm = times[a]
        rows.append(
            dict(
                arm=a,
                metric=r.metric,
                endpoints=r.endpoints,
                names=names,
                t_index=t_arm.index(r.time_h) if r.time_h is not None else None,
                tail=(t_arm.index(0.75 * horizons[a]), t_arm.index(horizons[a])),
                horizon=horizons[a],
            )
        )
    out = AggregateSetup(
        data=agg,
        n_virtual=M,
        seed=int(seed),
        arms=arms,
        arm_study=np.array([studies.index(k[0]) for k in arms], dtype=np.int32),
        engine=engine,
        grid=grid,
        window=window,
        amounts=amounts,
        effect_values=effect_values,
        xi=xi,
        independent=independent,
        correlated=correlated,
        catalogue=catalogue,
        rows=rows,
    )
    high = out.mc_ratio() > MC_RATIO_WARN
    if np.any(high):
        worst = int(np.argmax(out.mc_ratio()))
        warnings.warn(
            f"{int(high.sum())} aggregate summar{'ies' if high.sum() > 1 else 'y'} have a Monte "
            f"Carlo error above {MC_RATIO_WARN:g} of their own SE with {M} virtual subjects per "
            f"arm (worst: {agg.rows[worst].label}, n = {agg.rows[worst].n}); raise "
            f"aggregate_virtual to at least {int(math.ceil(agg.rows[worst].n / MC_RATIO_WARN**2))}",
            AggregateWarning,
            stacklevel=5,  # the caller of pkpd.fit
        )
    return out


def _stack(grids) -> dict:
    """One-regimen grids of different sizes padded to one shape, stacked: ``{name: [A, ...]}``
    (padding as :func:`pkpd.simulate.plan.build_grid` pads regimens: the last time repeated,
    no doses)."""
    G = max(g.size for g in grids)
    D = max(g.dose_time.shape[1] for g in grids)
    T = max(g.out_idx.shape[1] for g in grids)
    out = {k: [] for k in ("t", "is_break", "out_idx", "win", "pd_idx", "infusing", "bolus")}
    out.update(dose_time=[], dose_dur=[], dose_mask=[])
    for g in grids:
        n, d, m = g.size, g.dose_time.shape[1], g.out_idx.shape[1]
        horizon = g.t[0, -1]
        out["t"].append(np.concatenate([g.t[0], np.full(G - n, horizon)]))
        out["is_break"].append(np.concatenate([g.is_break[0], np.zeros(G - n, bool)]))
        out["out_idx"].append(np.concatenate([g.out_idx[0], np.full(T - m, g.out_idx[0, -1])]))
        out["win"].append(g.win[0])
        out["pd_idx"].append(g.pd_idx[0])
        for k in ("infusing", "bolus"):
            out[k].append(np.pad(g.__dict__[k][0], ((0, G - n), (0, D - d))))
        out["dose_time"].append(np.concatenate([g.dose_time[0], np.full(D - d, horizon)]))
        out["dose_dur"].append(np.concatenate([g.dose_dur[0], np.zeros(D - d)]))
        out["dose_mask"].append(np.concatenate([g.dose_mask[0], np.zeros(D - d, bool)]))
    pd_len = max(len(x) for x in out["pd_idx"])
    out["pd_idx"] = [np.pad(x, (0, pd_len - len(x)), mode="edge") for x in out["pd_idx"]]
    return {k: np.stack(v) for k, v in out.items()}


def virtual_values(agg: AggregateSetup, spec, pop, study_effects, beta, draw_sd) -> jnp.ndarray:
    """Each virtual subject's value of each summary row, ``[rows, M]``.

    ``study_effects``: ``{p: [studies]}`` between-study effects (transformed scale);
    ``draw_sd``: ``{"omega_<p>": ω, "corr_cholesky": L}`` of the parameters with subject
    effects."""
    from pkpd.inference import hierarchy as H
    from pkpd.simulate.engines import metrics_and_profiles

    A, M = agg.xi.shape[:2]
    ind, corr = agg.independent, agg.correlated
    xi = jnp.asarray(agg.xi)  # [A, M, k]
    z = jnp.moveaxis(xi[..., : len(ind)], -1, 0)  # [k_ind, A, M]
    zc = xi[..., len(ind) :] if corr else None
    eta = H.new_subject_effects(draw_sd, ind, corr, z, zc)  # {p: [A, M]}
    arm_study = jnp.asarray(agg.arm_study)
    eta_study = {
        p: jnp.broadcast_to(v[arm_study][:, None], (A, M)) for p, v in study_effects.items()
    }
    effect_values = {
        k: jnp.broadcast_to(jnp.asarray(v)[:, None], (A, M)) for k, v in agg.effect_values.items()
    }
    flat = lambda x: jnp.reshape(x, (A * M,))  # noqa: E731
    params = H.individual_parameters(
        spec,
        pop,
        eta={p: flat(v) for p, v in eta.items()},
        eta_study={p: flat(v) for p, v in eta_study.items()},
        beta=beta,
        effect_values={k: flat(v) for k, v in effect_values.items()},
        n=A * M,
    )
    params = {p: jnp.reshape(v, (A, M)) for p, v in params.items()}
    eng = agg.engine
    g = {k: jnp.asarray(v) for k, v in agg.grid.items()}
    amounts = jnp.asarray(agg.amounts)

    def one(th, amt, g_a):
        series, ok = eng.run(th, amt, g_a)
        profiles, metrics, ok = metrics_and_profiles(
            eng, th, series, g_a, agg.catalogue, ok, agg.window
        )
        return profiles, metrics, ok

    per_arm = jax.vmap(jax.vmap(one, in_axes=(0, None, None)), in_axes=(0, 0, 0))
    profiles, metrics, ok = per_arm(params, amounts, g)  # [A, M, ...]
    out = []
    for row in agg.rows:
        a = row["arm"]
        vals = [
            _row_value(row, e, name, metrics, profiles)
            for e, name in zip(row["endpoints"], row["names"], strict=True)
        ]
        v = vals[0] / vals[1] if len(vals) == 2 else vals[0]
        out.append(jnp.where(ok[a], v, jnp.nan))
    return jnp.stack(out)


def _row_value(row, e, name, metrics, profiles):
    """One endpoint's value of a summary row for every virtual subject of its arm, ``[M]``."""
    a = row["arm"]
    if row["metric"] in ("cmax", "ctrough", "auc_tau"):
        return metrics[name][a]
    prof = profiles[e][a]  # [M, output times]
    if row["metric"] == "auc_0_inf":
        i1, i2 = row["tail"]
        c1, c2 = prof[:, i1], prof[:, i2]
        # terminal slope over the last quarter; a concentration already 0 has no tail (safe
        # operands in both branches keep the gradient finite); a rising one has no slope: NaN
        gone = c2 <= 0.0
        c1s, c2s = jnp.where(gone, 2.0, c1), jnp.where(gone, 1.0, c2)
        lam = jnp.log(c1s / c2s) / (0.25 * row["horizon"])
        tail = jnp.where(gone, 0.0, c2s / jnp.where(lam > 0, lam, jnp.nan))
        return metrics[name][a] + tail
    v = prof[:, row["t_index"]]
    if row["metric"] == "value":
        return v
    v0 = prof[:, 0]
    return v - v0 if row["metric"] == "change" else 100.0 * (v / v0 - 1.0)


def _static_rows(agg: AggregateSetup):
    """Host arrays of the rows: n, log scale, median, observed statistic and spread (on the
    statistic's scale; NaN where none)."""
    rows = agg.data.rows
    n = np.array([r.n for r in rows], float)
    log = np.array(
        [r.statistic == "geomean" or (r.statistic == "median" and r.positive) for r in rows]
    )
    median = np.array([r.statistic == "median" for r in rows])
    y = np.array([r.value_model for r in rows], float)
    y_scale = np.where(log, np.log(y), y)
    s = np.full(len(rows), np.nan)
    for i, r in enumerate(rows):
        if r.spread == "sd":
            s[i] = r.spread_model
        elif r.spread == "se":
            s[i] = r.spread_model * math.sqrt(r.n)
        elif r.spread == "cv":
            cv = r.spread_value / 100.0
            s[i] = math.sqrt(math.log1p(cv * cv)) if log[i] else cv * r.value_model
        elif r.spread == "sd_log":
            s[i] = r.spread_value
    jac = np.where(log, -np.log(y), 0.0)  # density of y, not of log y
    return n, log, median, y_scale, s, jac


def _arm_groups(agg: AggregateSetup) -> list[np.ndarray]:
    """Row indices of each arm with more than one summary row."""
    arms: dict[int, list[int]] = {}
    for i, row in enumerate(agg.rows):
        arms.setdefault(int(row["arm"]), []).append(i)
    return [np.asarray(ix) for ix in arms.values() if len(ix) > 1]


def _joint_arm(idx, y, mu, se, dev, sd, n, median):
    """Log density of one arm's statistics ``y[idx]`` under their joint Gaussian, split into
    sequential conditionals (row ``k`` given the rows before it; they sum to the joint)."""
    d = dev[idx]
    m = d.shape[1]
    s = sd[idx]
    rho = (d @ d.T) / (m - 1) / jnp.maximum(s[:, None] * s[None, :], 1e-300)
    k = len(idx)
    eye = jnp.eye(k)
    # off the diagonal only, inside (-1, 1): arcsin's derivative is infinite at ±1, and a NaN
    # gradient of the branch jnp.where drops would still reach the sum
    rho = jnp.where(eye > 0, 0.0, jnp.clip(rho, -1.0 + 1e-12, 1.0 - 1e-12))
    med = median[idx]
    both, one = med[:, None] & med[None, :], med[:, None] ^ med[None, :]
    # asymptotic correlation of the statistics of one normal sample: means ρ, a mean and a
    # median ρ·sqrt(2/π), two medians (2/π)·arcsin ρ
    r = jnp.where(
        both, 2.0 / math.pi * jnp.arcsin(rho), jnp.where(one, rho * math.sqrt(2.0 / math.pi), rho)
    )
    nn = n[idx]
    r = r * jnp.sqrt(jnp.minimum(nn[:, None], nn[None, :]) / jnp.maximum(nn[:, None], nn[None, :]))
    r = (1.0 - JOINT_SHRINK) * r * (1.0 - eye) + eye
    e = se[idx]
    chol = jnp.linalg.cholesky(r * e[:, None] * e[None, :])
    z = jax.scipy.linalg.solve_triangular(chol, y[idx] - mu[idx], lower=True)
    return -0.5 * z**2 - jnp.log(jnp.diagonal(chol)) - 0.5 * math.log(2.0 * math.pi)


def summary_loglik(agg: AggregateSetup, v):
    """``(log density of every row [rows], predicted statistic on its scale [rows], its
    sampling SE [rows])`` from the virtual values ``v`` [rows, M] (module docstring)."""
    import jax.scipy.stats as jst

    n, log, median, y, s, jac = (jnp.asarray(x) for x in _static_rows(agg))
    x = jnp.where(log[:, None], jnp.log(jnp.where(log[:, None], v, 1.0)), v)
    mu = jnp.mean(x, axis=1)
    dev = x - mu[:, None]
    var = jnp.sum(dev**2, axis=1) / (x.shape[1] - 1)
    sd = jnp.sqrt(var)
    se = sd / jnp.sqrt(n) * jnp.where(median, math.sqrt(math.pi / 2), 1.0)
    ll = jst.norm.logpdf(y, mu, se) + jac
    # the statistics of one arm's rows, jointly: one Gaussian over the arm (module docstring)
    for idx in _arm_groups(agg):
        ll = ll.at[idx].set(_joint_arm(idx, y, mu, se, dev, sd, n, median) + jac[idx])
    # the published spread: s² ~ Gamma(mean σ², variance σ⁴ (2/(n-1) + κ/n))
    kurt = jnp.mean(dev**4, axis=1) / jnp.maximum(jnp.mean(dev**2, axis=1), 1e-300) ** 2 - 3.0
    kurt = jnp.where(log, 0.0, jnp.clip(kurt, -1.0, 50.0))
    has = jnp.isfinite(s) & (n >= 2)
    nm1 = jnp.maximum(n - 1.0, 1.0)
    shape = 1.0 / (2.0 / nm1 + kurt / n)
    s2 = jnp.where(has, s, 1.0) ** 2
    rate = shape / var
    lg = (
        shape * jnp.log(rate)
        - jax.scipy.special.gammaln(shape)
        + (shape - 1.0) * jnp.log(s2)
        - rate * s2
        + jnp.log(2.0 * jnp.sqrt(s2))
    )
    ll = ll + jnp.where(has, lg, 0.0)
    return ll, mu, se


def rows_attr(agg: AggregateSetup) -> list[dict]:
    """The rows as stored in a fit's attributes (``aggregate_rows``)."""
    _, log, *_ = _static_rows(agg)
    mc = agg.mc_ratio()
    return [
        dict(
            label=r.label,
            study=r.study,
            arm=r.arm,
            endpoint=r.endpoint,
            metric=r.metric,
            window=r.window,
            time_h=r.time_h,
            statistic=r.statistic,
            n=r.n,
            value_model=r.value_model,
            model_unit=r.model_unit,
            log_scale=bool(log[i]),
            mc_ratio=float(mc[i]),
            source=r.source,
        )
        for i, r in enumerate(agg.data.rows)
    ]


__all__ = [
    "AggregateSetup",
    "AggregateWarning",
    "setup",
    "summary_loglik",
    "virtual_values",
]
