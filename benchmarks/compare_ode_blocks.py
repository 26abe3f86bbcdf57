"""The same model two ways, the same posterior? (issue 20): one-compartment oral PK + an
indirect response (type I) built from blocks (its ``"grid"`` engine: closed-form PK, the
turnover on a dose-aware grid) and written by hand as an ``ODEModel`` (``solver="dopri5"``,
pkpd's explicit solver with its own adjoint, default tolerances), fitted
to the same synthetic data with the same priors and sampler settings. For every population
quantity, the difference of the posterior means in units of its Monte Carlo standard error
(``z = (m_a - m_b) / sqrt(mcse_a² + mcse_b²)``, ArviZ's MCSE of the mean): |z| of a few or less
is "the same posterior within Monte Carlo error".

    .venv/bin/python benchmarks/compare_ode_blocks.py [--subjects 12] [--warmup 300] [--draws 300]

With diffrax's Tsit5 the ODE fit did not finish in 37 min on this project's 2-core machine
(benchmarks/RESULTS.md, 2026-12-06); the results with ``"dopri5"`` are in RESULTS.md too.
"""

from __future__ import annotations

import argparse
import time

import numpyro

numpyro.set_host_device_count(2)

import arviz as az  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from bench_blocks import block_model, hand_written, study  # noqa: E402

import pkpd  # noqa: E402
from pkpd import diagnostics as dx  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--subjects", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--draws", type=int, default=300)
    args = ap.parse_args()
    df = study(args.subjects)
    fits, seconds = {}, {}
    for label, model in (
        ("blocks (grid)", block_model()),
        ("ODEModel (dopri5)", hand_written("dopri5")),
    ):
        t0 = time.time()
        fits[label] = pkpd.fit(
            model, df, chains=2, warmup=args.warmup, draws=args.draws, seed=11, progress_bar=False
        )
        seconds[label] = time.time() - t0
        print(
            f"{label}: {seconds[label]:.0f} s, timing {fits[label].attrs['timing_s']}", flush=True
        )
    a, b = fits.values()
    names = dx.tables.population_variables(a)
    rows = []
    for v in names:
        ma, mb = float(a.posterior[v].mean()), float(b.posterior[v].mean())
        ea = float(az.mcse(a.posterior[v].to_dataset(name="x"), method="mean")["x"])
        eb = float(az.mcse(b.posterior[v].to_dataset(name="x"), method="mean")["x"])
        rows.append(
            dict(
                parameter=v,
                mean_blocks=ma,
                mean_ode=mb,
                sd_blocks=float(a.posterior[v].std()),
                sd_ode=float(b.posterior[v].std()),
                z=(ma - mb) / np.hypot(ea, eb),
            )
        )
    tab = pd.DataFrame(rows).set_index("parameter")
    print(tab.round(4).to_string())
    for label, f in fits.items():
        ss = f.sample_stats
        print(
            f"{label}: divergences {int(ss['diverging'].sum())}, "
            f"mean leapfrog steps {float(ss['n_steps'].mean()):.1f}"
        )
    print(f"max |z| {float(np.abs(tab.z).max()):.2f} over {len(tab)} quantities")


if __name__ == "__main__":
    main()
