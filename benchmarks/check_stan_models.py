"""Check that the Stan benchmark programs compute what pkpd computes, before any timing.

For each program (``benchmarks/stan/*.stan``):

1. predictions: random individual parameters for every subject of a dataset; the Stan
   program's generated quantities (a ``fixed_param`` run at those values) against
   ``pkpd.load_model(...).predict``, at every observation, to 1e-6 relative;
2. log density: at three random points of the hierarchical parameter space (typical values,
   between-subject SDs, subject values, residual SDs), Stan's log density on its unconstrained
   space (pystan ``log_prob`` with the Jacobian) against minus the potential energy of pkpd's
   NumPyro model (``pkpd.inference.fit.build_model``), for the non-centred and (where pkpd
   has it) the centred parameterisation of the subject effects. The differences between the
   points must agree to 1e-6 relative (Stan's ``~`` drops constants, and the two unconstrained
   spaces differ by constant affine maps, so only differences are comparable). This checks
   the priors (read from the same TOML file), the parameterisation, the residual error model
   and the M3 likelihood of BLQ observations, not only the structural model.

Data: the simulated one-compartment oral dataset of 12 subjects (benchmarks/simdata.py) with
an LLOQ that makes some observations BLQ, and the phase II study (PH2) of the bundled
temsirolimus dataset (PK endpoints, with its BLQ observations).

    .venv/bin/python benchmarks/check_stan_models.py

Prints the largest relative differences; exits 1 on a mismatch.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import simdata  # noqa: E402
import stan_side  # noqa: E402

PRIORS, TEMSIROLIMUS_CSV = stan_side.PRIORS, stan_side.TEMSIROLIMUS_CSV
PKPD_MODEL = {"one_cmt_oral": "one_cmt_oral", "temsirolimus_pk": "temsirolimus"}
TOL = 1e-6
#: Typical values around which the check draws parameters (L/h, L, 1/h).
CENTRE = {
    "one_cmt_oral": {"cl": 4.0, "v": 40.0, "ka": 1.2},
    "temsirolimus_pk": {
        "cl": 16.2,
        "v1": 35.0,
        "q": 8.7,
        "v2": 137.0,
        "cl_sir": 1.8,
        "v_sir": 141.8,
    },
}


def oral_check_data() -> pd.DataFrame:
    """12 simulated subjects; an LLOQ of 800 ng/mL puts some observations below it."""
    df = simdata.simulate(12, seed=7)
    df["LLOQ"] = np.where(df["EVID"] == 0, 800.0, np.nan)
    return df


def temsirolimus_ph2() -> pd.DataFrame:
    df = stan_side.read_nonmem(TEMSIROLIMUS_CSV)
    return df[df["STUDY"] == "PH2"].reset_index(drop=True)


def _key(x) -> str:
    try:
        return repr(float(x))
    except (TypeError, ValueError):
        return str(x)


def _pkpd_setup(program, df, parameterization="noncentered"):
    """pkpd's fit spec and NumPyro model for this program, dataset and parameterisation."""
    import pkpd
    from pkpd.inference.fit import build_model, prepare

    endpoints = list(stan_side.ENDPOINTS[program]) if program == "temsirolimus_pk" else None
    spec = prepare(PKPD_MODEL[program], pkpd.read_dataset(df), PRIORS[program], endpoints=endpoints)
    if hasattr(spec, "parameterization"):
        spec = dataclasses.replace(spec, parameterization=parameterization)
    return spec, build_model(spec)


# ---------------------------------------------------------------------------------------------
# 1. predictions


def check_predictions(program: str, df: pd.DataFrame, rng) -> float:
    import jax

    problem = _stan_problem(program, df, emit_pred=True)
    ids = pd.unique(df["ID"])
    pops = stan_side.POP_PARAMS[program]
    bsv = stan_side.BSV_PARAMS[program]
    # individual parameters: lognormal around CENTRE (parameters without BSV: one value)
    theta = {
        p: CENTRE[program][p] * np.exp(rng.normal(0.0, 0.5 if p in bsv else 0.0, len(ids)))
        for p in pops
    }
    if program == "temsirolimus_pk":
        theta["q"] = np.full(len(ids), CENTRE[program]["q"] * np.exp(rng.normal(0, 0.3)))
    init = {}
    for p in pops:
        init[f"log_{p}_pop"] = float(np.log(np.median(theta[p])))
        if p in bsv:
            init[f"omega_{p}"] = 0.5
            init[f"log_{p}"] = np.log(theta[p])
    for ep in stan_side.ENDPOINTS[program]:
        init[stan_side.sigma_name(program, ep)] = 0.2
    res = stan_side.run_stan(
        {
            "program": program,
            "data": problem.data,
            "mode": "fixed_param",
            "chains": 1,
            "draws": 1,
            "seed": 1,
            "init": [init],
            "outputs": ["pred"],
        }
    )
    stan_pred = res["pred"][0, 0]  # oral: [n_obs]; temsirolimus: [n_points, 2]
    d = problem.data
    if program == "one_cmt_oral":
        obs_stan = stan_pred
    else:
        obs_stan = stan_pred[d["obs_point"] - 1, d["obs_endpoint"] - 1]

    # pkpd: model.predict per subject, vmapped, at every observation point
    import pkpd

    ds = pkpd.read_dataset(df)
    padded = ds.to_arrays()
    model = pkpd.load_model(PKPD_MODEL[program])
    params = {}
    order = [list(map(_key, ids)).index(_key(s)) for s in padded.subject_ids]
    for p in pops:
        params[p] = np.asarray(theta[p])[order]
    if program == "temsirolimus_pk":
        model = model.with_endpoints(list(stan_side.ENDPOINTS[program]))
        params["fm"] = np.full(len(ids), d["fm"])
    out = jax.vmap(model.predict)(params, padded.data)
    pd_data = padded.data
    s_idx, p_idx = np.nonzero(np.asarray(pd_data.point_mask))
    ep_names = np.asarray(padded.endpoints)[np.asarray(pd_data.point_endpoint)[s_idx, p_idx]]
    rows = []
    for s, p, e in zip(s_idx, p_idx, ep_names, strict=True):
        if e in out:
            rows.append(
                (
                    _key(padded.subject_ids[s]),
                    float(pd_data.point_time[s, p]),
                    e,
                    float(out[e][s, p]),
                )  # fmt: skip
            )
    pk = pd.DataFrame(rows, columns=["key", "TIME", "endpoint", "pkpd"])
    obs = stan_side._observations(stan_side.read_nonmem(df))
    if program == "temsirolimus_pk":
        obs = obs[obs["DVID"].isin(list(stan_side.TEM_DVID))]
        endpoint = obs["DVID"].map(stan_side.TEM_DVID).to_numpy()
    else:
        endpoint = np.full(len(obs), "conc")
    st = pd.DataFrame(
        {
            "key": [_key(i) for i in obs["ID"]],
            "TIME": obs["TIME"].to_numpy(float),
            "endpoint": endpoint,
            "stan": obs_stan,
        }
    )
    m = st.merge(pk, on=["key", "TIME", "endpoint"], how="left", validate="one_to_one")
    if m["pkpd"].isna().any() or len(m) != len(pk):
        raise RuntimeError(f"{program}: observations of Stan and pkpd do not line up")
    rel = np.abs(m["stan"] - m["pkpd"]) / np.maximum(np.abs(m["pkpd"]), 1e-9)
    print(
        f"{program:16s} predictions: {len(m)} observations of {len(ids)} subjects, "
        f"max relative difference {rel.max():.2e} (concentrations "
        f"{m['pkpd'].min():.3g}-{m['pkpd'].max():.3g} ng/mL)"
    )
    return float(rel.max())


def _stan_problem(program, df, centered=False, emit_pred=False):
    build = (
        stan_side.one_cmt_oral_data if program == "one_cmt_oral" else stan_side.temsirolimus_pk_data
    )
    if program == "temsirolimus_pk":
        df = df[df["DVID"].isna() | df["DVID"].isin(list(stan_side.TEM_DVID))]
    return build(df, PRIORS[program], centered=centered, emit_pred=emit_pred)


# ---------------------------------------------------------------------------------------------
# 2. log density


def check_log_density(program: str, df: pd.DataFrame, rng, parameterization: str) -> float:
    import jax.numpy as jnp
    import numpyro.infer.util as nu

    centered = parameterization == "centered"
    problem = _stan_problem(program, df, centered=centered)
    ids = list(map(_key, pd.unique(df["ID"])))
    spec, nm = _pkpd_setup(program, df, parameterization)
    if spec.obs_y.shape[0] != problem.n_obs or int(spec.obs_blq.sum()) != problem.n_blq:
        raise RuntimeError(
            f"{program}: pkpd fits {spec.obs_y.shape[0]} observations ({int(spec.obs_blq.sum())}"
            f" BLQ), Stan {problem.n_obs} ({problem.n_blq} BLQ)"
        )
    order = [ids.index(_key(s)) for s in spec.padded.subject_ids]
    obs = jnp.asarray(np.where(spec.obs_blq, np.nan_to_num(spec.obs_lloq, nan=1.0), spec.obs_y))
    kw = {"obs": obs}
    pops = stan_side.POP_PARAMS[program]
    bsv = stan_side.BSV_PARAMS[program]
    eps = stan_side.ENDPOINTS[program]
    stan_points, lp_pkpd = [], []
    for _ in range(3):
        # near the typical values with wide residual SDs, so that no single badly fitted
        # observation dominates the density and hides the prior terms
        pop = {p: CENTRE[program][p] * np.exp(rng.normal(0, 0.05)) for p in pops}
        omega = {p: rng.uniform(0.1, 0.6) for p in bsv}
        z = {p: 0.5 * rng.standard_normal(len(ids)) for p in bsv}
        log_theta = {p: np.log(pop[p]) + omega[p] * z[p] for p in bsv}
        sigma = {e: rng.uniform(0.4, 0.8) for e in eps}
        sp = {f"log_{p}_pop": float(np.log(pop[p])) for p in pops}
        sp.update({f"omega_{p}": omega[p] for p in bsv})
        sp.update({f"log_{p}": log_theta[p] for p in bsv})
        for e in eps:
            sp[stan_side.sigma_name(program, e)] = sigma[e]
        stan_points.append(sp)
        pp = {f"pop_{p}": jnp.asarray(pop[p]) for p in pops}
        pp.update({f"omega_{p}": jnp.asarray(omega[p]) for p in bsv})
        if centered:
            pp.update({f"zc_{p}": jnp.asarray(log_theta[p][order]) for p in bsv})
        else:
            pp.update({f"z_{p}": jnp.asarray(z[p][order]) for p in bsv})
        pp.update({f"sigma_prop_{e}": jnp.asarray(sigma[e]) for e in eps})
        u = nu.unconstrain_fn(nm, (), kw, pp)
        lp_pkpd.append(-float(nu.potential_energy(nm, (), kw, u)))
    res = stan_side.run_stan(
        {"program": program, "data": problem.data, "mode": "log_prob", "points": stan_points}
    )
    lp_stan = np.asarray(res["log_prob"])
    d_stan = lp_stan[1:] - lp_stan[0]
    d_pkpd = np.asarray(lp_pkpd[1:]) - lp_pkpd[0]
    rel = np.abs(d_stan - d_pkpd) / np.maximum(np.abs(d_pkpd), 1.0)
    print(
        f"{program:16s} log density ({parameterization}): differences between 3 points, Stan "
        f"{np.array2string(d_stan, precision=9)}, pkpd {np.array2string(d_pkpd, precision=9)}; "
        f"max absolute difference {np.abs(d_stan - d_pkpd).max():.2e}, "
        f"relative {rel.max():.2e}"
    )
    return float(rel.max())


def _parameterizations() -> list[str]:
    """Those pkpd's fits offer (the centred one arrived with ``pkpd.fit(parameterization=)``)."""
    import inspect

    import pkpd

    if "parameterization" in inspect.signature(pkpd.fit).parameters:
        return ["noncentered", "centered"]
    return ["noncentered"]


def main() -> int:
    rng = np.random.default_rng(20260902)
    worst = {}
    for program, df in (
        ("one_cmt_oral", oral_check_data()),
        ("temsirolimus_pk", temsirolimus_ph2()),
    ):
        worst[f"{program} predictions"] = check_predictions(program, df, rng)
        for par in _parameterizations():
            worst[f"{program} log density ({par})"] = check_log_density(program, df, rng, par)
    bad = {k: v for k, v in worst.items() if not v <= TOL}
    if bad:
        print(
            f"MISMATCH (tolerance {TOL:g} relative): "
            + ", ".join(f"{k} {v:.2e}" for k, v in bad.items())
        )
        return 1
    print(f"OK: every check within {TOL:g} relative")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
