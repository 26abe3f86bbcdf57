"""Issue 6's speed check: the joint temsirolimus PK/PD fit of the full bundled dataset.

365 subjects in 4 studies, every endpoint the data carry (temsirolimus, sirolimus, S6K, VEGF,
PD-1). The target is 4 chains x 500 warmup x 500 draws in under 15 minutes on a 2-core
machine with R-hat < 1.01, minimum bulk ESS > 400 for the population parameters and no
divergences. Prints wall time, time per iteration, leapfrog steps, min bulk ESS and max R-hat.

    .venv/bin/python benchmarks/bench_fit_full.py [--chains 4 --warmup 500 --draws 500]
        [--data temsirolimus|temsirolimus_small] [--endpoint E ...]
        [--mass-matrix diagonal|dense-population|dense] [--parameterization auto|...]
        [--target-accept P] [--out FIT.nc] [--model registered|class]

``--model class`` fits the hand-wired ``TemsirolimusModel`` instead of the registered model
(written with the public blocks), to compare the two.
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", default="temsirolimus")
    ap.add_argument("--endpoint", action="append", default=None)
    ap.add_argument("--mass-matrix", default="diagonal")
    ap.add_argument("--parameterization", default="auto")
    ap.add_argument("--target-accept", type=float, default=None, help="default: pkpd.fit's")
    ap.add_argument("--out", default=None, help="also save the fit (netCDF) here")
    ap.add_argument("--model", choices=("registered", "class"), default="registered")
    args = ap.parse_args()
    os.environ.setdefault(
        "XLA_FLAGS", f"--xla_force_host_platform_device_count={max(args.chains, 1)}"
    )
    import arviz as az
    import numpy as np

    import pkpd
    from pkpd.models.temsirolimus import TemsirolimusModel

    ds, _ = pkpd.datasets.load(args.data)
    t0 = time.perf_counter()
    idata = pkpd.fit(
        TemsirolimusModel() if args.model == "class" else "temsirolimus",
        ds,
        chains=args.chains,
        warmup=args.warmup,
        draws=args.draws,
        seed=args.seed,
        endpoints=args.endpoint,
        progress_bar=False,
        mass_matrix=args.mass_matrix,
        parameterization=args.parameterization,
        **({} if args.target_accept is None else {"target_accept": args.target_accept}),
    )
    wall = time.perf_counter() - t0
    pops = [v for v in idata.posterior.data_vars if v.startswith("pop_")]
    summ = az.summary(idata, var_names=pops, kind="diagnostics", round_to="none")
    # every population-level quantity (typical values, variabilities, residual SDs, effects)
    levels = [
        v
        for v in idata.posterior.data_vars
        if v.startswith(("pop_", "omega_", "sigma_", "beta_"))
        and idata.posterior[v].ndim == 2
        and float(idata.posterior[v].std()) > 0
    ]
    summ_all = az.summary(idata, var_names=levels, kind="diagnostics", round_to="none")
    ss = idata.sample_stats
    iters = args.chains * (args.warmup + args.draws)
    print(f"model {args.model}; data {args.data}: {ds.n_subjects} subjects, "
          f"endpoints {idata.attrs['endpoints']}")  # fmt: skip
    print(f"{args.chains} chains x {args.warmup} warmup x {args.draws} draws: {wall:.0f} s "
          f"({wall / iters * args.chains:.2f} s per iteration per chain, chains in parallel)")  # fmt: skip
    print(f"leapfrog steps per draw: mean {float(ss['n_steps'].mean()):.1f}, "
          f"max tree depth {int(ss['tree_depth'].max())}, divergences {int(ss['diverging'].sum())}")  # fmt: skip
    for name, sm in (("pop_*", summ), ("population-level", summ_all)):
        print(f"{name}: min bulk ESS {sm['ess_bulk'].min():.0f} ({sm['ess_bulk'].idxmin()}), "
              f"min tail ESS {sm['ess_tail'].min():.0f} ({sm['ess_tail'].idxmin()}), "
              f"max R-hat {sm['r_hat'].max():.4f} ({sm['r_hat'].idxmax()})")  # fmt: skip
    print(f"leapfrog steps per draw by chain: {np.round(ss['n_steps'].mean('draw').values, 1)}, "
          f"divergences by chain: {ss['diverging'].sum('draw').values}")  # fmt: skip
    print(f"mass matrix {args.mass_matrix}, parameterization {args.parameterization}, "
          f"target_accept {args.target_accept or 'default'}")  # fmt: skip
    print(f"centred subject effects (subjects): {idata.attrs.get('centered_subjects')}")
    print(f"sampled through their Hill level: {idata.attrs.get('sampled_levels')}")
    print(f"seconds per phase: {idata.attrs.get('timing_s')}")
    full = 4 * 1000
    print(f"extrapolated to 4 x (500 + 500): {wall / iters * full / 60:.1f} min "
          f"(target < 15 min)")  # fmt: skip
    print(np.round(summ, 3).to_string())
    if args.out:
        pkpd.save_fit(idata, args.out)


if __name__ == "__main__":
    main()
