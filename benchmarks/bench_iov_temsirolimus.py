"""Cost of inter-occasion variability on the temsirolimus model: the log-density gradient of a
fit of the bundled 40-subject file (``temsirolimus_small``: 1-3 occasions per subject) with
and without ``iov`` on clearance, per endpoint group, side by side in one process.

Each pair is timed alternately (``--rounds`` rounds of ``--repeat`` gradients each, the
fastest round kept) so load on the machine hits both alike; the ratio is what to read.

    .venv/bin/python benchmarks/bench_iov_temsirolimus.py [--repeat 30] [--rounds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

import pkpd
from pkpd.inference import fit as F

GROUPS = {
    "PK (temsirolimus, sirolimus)": ["temsirolimus", "sirolimus"],
    "PK + S6K": ["temsirolimus", "sirolimus", "s6k"],
    "VEGF + PD-1": ["vegf", "pd1_cd8"],
    "all endpoints": None,
}


def gradient(ds, endpoints, iov: bool):
    priors = pkpd.load_priors(model="temsirolimus")
    if iov:
        priors = priors.with_iov("cl", 0.2)
    spec = F.prepare("temsirolimus", ds, priors, endpoints=endpoints)
    obs = jnp.asarray(np.where(spec.obs_blq, np.nan_to_num(spec.obs_lloq, nan=1.0), spec.obs_y))
    nm = F.build_model(dataclasses.replace(spec, parameterization="noncentered"))
    x, objective = F._valid_start(nm, obs, jax.random.PRNGKey(0))
    x = jnp.asarray(x)
    jax.block_until_ready(objective.value_and_grad(x))
    return lambda: objective.value_and_grad(x), x.shape[0]


def timed(f, repeat):
    t0 = time.perf_counter()
    for _ in range(repeat):
        v = f()
    jax.block_until_ready(v)
    return (time.perf_counter() - t0) / repeat * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    ds, _ = pkpd.datasets.load("temsirolimus_small")
    print(f"{'endpoints':30s} {'no IOV ms':>10s} {'IOV ms':>10s} {'ratio':>6s}  dims")
    for label, eps in GROUPS.items():
        (f0, d0), (f1, d1) = gradient(ds, eps, False), gradient(ds, eps, True)
        a, b = [], []
        for _ in range(args.rounds):
            a.append(timed(f0, args.repeat))
            b.append(timed(f1, args.repeat))
        print(f"{label:30s} {min(a):10.2f} {min(b):10.2f} {min(b) / min(a):6.2f}  {d0} -> {d1}")


if __name__ == "__main__":
    main()
