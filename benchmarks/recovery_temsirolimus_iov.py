"""Recovery of inter-occasion variability on the bundled temsirolimus data: the joint model
(every endpoint) fitted to ``temsirolimus_small`` (40 subjects, 1-3 occasions: the sampled
cycles) with ``iov`` on clearance added to the default priors, against the stored truth
(``truth.json``: ω of clearance 0.25, ω_iov 0.15). Prints the wall time, divergences, the 90%
intervals of the clearance SDs and of a few population values, and their posterior correlation.

    .venv/bin/python benchmarks/recovery_temsirolimus_iov.py [--chains 2] [--warmup 150]
        [--draws 150] [--seed 1] [--no-iov]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import pkpd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--draws", type=int, default=150)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-iov", action="store_true", help="the default priors, no IOV")
    args = ap.parse_args()
    ds, truth = pkpd.datasets.load("temsirolimus_small")
    priors = pkpd.load_priors(model="temsirolimus")
    if not args.no_iov:
        priors = priors.with_iov("cl", 0.2)
    t0 = time.perf_counter()
    idata = pkpd.fit(
        "temsirolimus", ds, priors, chains=args.chains, warmup=args.warmup, draws=args.draws,
        seed=args.seed, progress_bar=False,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    ss = idata.sample_stats
    print(f"fit {wall:.0f} s, divergences {int(ss['diverging'].sum())}")
    post = idata.posterior

    def show(name, value):
        lo, med, hi = np.quantile(post[name].values, [0.05, 0.5, 0.95])
        print(f"  {name:16s} {med:9.4g}  90% CrI {lo:.4g}-{hi:.4g}  truth {value:.4g}")

    for p in ("cl", "v1", "cl_sir", "v_sir"):
        show(f"pop_{p}", truth["typical"][p])
    show("omega_cl", truth["omega"]["cl"])
    if "omega_iov_cl" in post:
        show("omega_iov_cl", truth["omega_iov"]["cl"])
        r = np.corrcoef(post["omega_cl"].values.ravel(), post["omega_iov_cl"].values.ravel())
        print(f"  corr(omega_cl, omega_iov_cl) {r[0, 1]:.2f}")
    for e in ("temsirolimus", "sirolimus"):
        name = f"sigma_prop_{e}"
        if name in post:
            print(f"  {name:16s} {float(post[name].median()):9.4g}  truth "
                  f"{truth['residual'][e]['proportional']:.4g}")  # fmt: skip


if __name__ == "__main__":
    main()
