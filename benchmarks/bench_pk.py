"""PK simulation throughput: pkpd (jit + vmap, closed form) vs a per-subject scipy loop.

The temsirolimus → sirolimus PK model (both analytes), 12 weekly 25 mg 30-min infusions,
100 time points per subject, subjects with log-normal variability. pkpd simulates all
``--subjects`` at once; scipy's ``solve_ivp`` (LSODA, rtol 1e-8) integrates the same ODE
subject by subject on a sample of ``--scipy-subjects``. Both are timed in this run, and the
throughput ratio (subjects per second) is printed, with pkpd's compile time and the largest
relative difference between the two on the sampled subjects.

    .venv/bin/python benchmarks/bench_pk.py [--subjects 10000] [--scipy-subjects 20]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from scipy.integrate import solve_ivp

import pkpd
from pkpd.models.temsirolimus import MW_SIR, MW_TEM, TYPICAL, TemsirolimusModel

PK = ("cl", "v1", "q", "v2", "fm", "cl_sir", "v_sir")


def population(n, seed=0):
    rng = np.random.default_rng(seed)
    omega = {"cl": 0.25, "v1": 0.15, "v2": 0.25, "cl_sir": 0.4, "v_sir": 0.25}
    return {p: TYPICAL[p] * np.exp(rng.normal(0, omega.get(p, 0.0), n)) for p in PK}


def design(n_doses=12, n_times=100):
    doses = [(168.0 * k, 25.0, 0.5) for k in range(n_doses)]
    times = np.linspace(0.25, 168.0 * n_doses, n_times)
    rows = [dict(ID=1, TIME=t, EVID=1, AMT=a, DUR=d) for t, a, d in doses]
    rows += [dict(ID=1, TIME=t, EVID=0, AMT=0.0, DUR=0.0) for t in times]
    df = pd.DataFrame(rows).sort_values("TIME", kind="stable")
    subject = jax.tree.map(lambda x: jnp.asarray(x[0]), pkpd.read_dataset(df).to_arrays().data)
    return doses, times, subject


def scipy_subject(p, doses, times):
    k10, k12, k21 = p["cl"] / p["v1"], p["q"] / p["v1"], p["q"] / p["v2"]
    ks = p["cl_sir"] / p["v_sir"]

    def rhs(t, y, rate):
        a1, a2, a_s = y
        return [rate - (k10 + k12) * a1 + k21 * a2, k12 * a1 - k21 * a2,
                p["fm"] * k10 * a1 * MW_SIR / MW_TEM - ks * a_s]  # fmt: skip

    cuts = sorted({0.0, *[t for t, _, _ in doses], *[t + d for t, _, d in doses], float(times[-1])})
    y = np.zeros(3)
    out = np.empty((len(times), 3))
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        rate = sum(a / d for t0, a, d in doses if t0 <= lo < t0 + d)
        inside = (times > lo) & (times <= hi)
        t_eval = np.unique(np.r_[times[inside], hi])
        sol = solve_ivp(rhs, (lo, hi), y, method="LSODA", rtol=1e-8, atol=1e-12,
                        t_eval=t_eval, args=(rate,))  # fmt: skip
        out[inside] = sol.y[:, np.searchsorted(t_eval, times[inside])].T
        y = sol.y[:, -1]
    return 1000 * out[:, 0] / p["v1"], 1000 * out[:, 2] / p["v_sir"]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--subjects", type=int, default=10_000)
    ap.add_argument("--scipy-subjects", type=int, default=20)
    args = ap.parse_args()
    doses, times, subject = design()
    pop = population(args.subjects)
    model = TemsirolimusModel(endpoints=("temsirolimus", "sirolimus"))
    batch = jax.tree.map(lambda x: jnp.broadcast_to(x, (args.subjects,) + x.shape), subject)
    f = jax.jit(jax.vmap(model.predict))
    params = {k: jnp.asarray(v) for k, v in pop.items()}
    t0 = time.perf_counter()
    compiled = f.lower(params, batch).compile()
    compile_s = time.perf_counter() - t0
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        out = compiled(params, batch)
        jax.block_until_ready(out)
        runs.append(time.perf_counter() - t0)
    pkpd_s = float(np.median(runs))
    k = args.scipy_subjects
    t0 = time.perf_counter()
    ref = [scipy_subject({p: pop[p][i] for p in PK}, doses, times) for i in range(k)]
    scipy_s = time.perf_counter() - t0
    err = 0.0
    for i, (ct, cs) in enumerate(ref):
        for got, want in ((out["temsirolimus"][i], ct), (out["sirolimus"][i], cs)):
            big = want > 1e-6 * want.max()
            err = max(err, float(np.max(np.abs(np.asarray(got)[big] - want[big]) / want[big])))
    pkpd_rate = args.subjects / pkpd_s
    scipy_rate = k / scipy_s
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
    print(f"pkpd : {args.subjects} subjects x {len(doses)} doses x {len(times)} times in "
          f"{pkpd_s:.3f} s (median of 3) -> {pkpd_rate:,.0f} subjects/s; compile {compile_s:.2f} s")  # fmt: skip
    print(
        f"scipy: {k} subjects in {scipy_s:.2f} s -> {scipy_rate:,.1f} subjects/s (solve_ivp LSODA)"
    )
    print(f"ratio pkpd/scipy (throughput): {pkpd_rate / scipy_rate:,.0f}x")
    print(f"max relative difference on the {k} shared subjects: {err:.2e}")


if __name__ == "__main__":
    main()
