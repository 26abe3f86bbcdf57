"""Cost of inter-occasion variability: the log-density gradient of one fit with and without
``iov`` on clearance, side by side in one run (same data, same process).

One-compartment IV, 24 subjects × 3 weekly occasions × 5 samples (the design of
``tests/inference/test_iov.py``), data simulated with IOV on CL. Prints compile time and ms per
gradient of each, and their ratio.

    .venv/bin/python benchmarks/bench_iov.py [--subjects 24] [--occasions 3] [--repeat 200]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from numpyro.infer.util import initialize_model

import pkpd
from pkpd.inference.model import build_model
from pkpd.inference.priors import load_priors
from pkpd.inference.spec import prepare
from pkpd.models import load_model

PRIORS = {
    "model": {"name": "one_cmt_iv"},
    "parameters": {
        "cl": {"unit": "L/h", "prior": {"family": "lognormal", "median": 2.0, "sd_log": 1.0},
               "bsv": {"family": "halfnormal", "scale": 0.5}},
        "v": {"unit": "L", "prior": {"family": "lognormal", "median": 30.0, "sd_log": 1.0},
              "bsv": {"family": "halfnormal", "scale": 0.5}},
    },
    "residual": {"conc": {"model": "proportional", "unit": "ng/mL",
                          "proportional": {"family": "halfnormal", "scale": 0.3}}},
}  # fmt: skip


def study(n, n_occ, seed=14):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        for k in range(n_occ):
            rows.append(dict(ID=i + 1, TIME=168.0 * k, EVID=1, AMT=100.0, DV=np.nan, OCC=k + 1))
            rows += [
                dict(ID=i + 1, TIME=168.0 * k + t, EVID=0, AMT=0.0, DV=1.0, OCC=k + 1)
                for t in (0.5, 2.0, 6.0, 12.0, 24.0)
            ]
    df = pd.DataFrame(rows)
    pad = pkpd.read_dataset(df).to_arrays()
    eta = rng.normal(0, [0.3, 0.2], size=(n, 2))
    cl = 2.0 * np.exp(eta[:, :1] + rng.normal(0, 0.25, size=(n, n_occ)))
    params = {"cl": jnp.asarray(cl), "v": jnp.asarray(30.0 * np.exp(eta[:, 1]))}
    m = load_model("one_cmt_iv")
    pred = np.asarray(jax.vmap(m.predict)(params, jax.tree.map(jnp.asarray, pad.data))["conc"])
    y = pred * np.exp(rng.normal(0, 0.1, pred.shape))
    df.loc[df.EVID == 0, "DV"] = y[np.asarray(pad.data.point_mask)]
    return df


def gradient_cost(df, priors, repeat):
    spec = prepare("one_cmt_iv", df, priors)
    info = initialize_model(
        jax.random.PRNGKey(0), build_model(spec), model_kwargs={"obs": jnp.asarray(spec.obs_y)}
    )
    u = info.param_info.z
    g = jax.jit(jax.value_and_grad(info.potential_fn))
    t = time.perf_counter()
    jax.block_until_ready(g(u))
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(repeat):
        jax.block_until_ready(g(u))
    return compile_s, (time.perf_counter() - t) / repeat * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--subjects", type=int, default=24)
    ap.add_argument("--occasions", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=200)
    a = ap.parse_args()
    df = study(a.subjects, a.occasions)
    plain = load_priors(PRIORS, model=load_model("one_cmt_iv"))
    with_iov = plain.with_iov("cl", 0.5)
    out = {}
    for name, pri in (("without iov", plain), ("with iov on cl", with_iov)):
        out[name] = gradient_cost(df, pri, a.repeat)
        print(f"{name:>16}: compile {out[name][0]:.1f} s, gradient {out[name][1]:.3f} ms")
    ratio = out["with iov on cl"][1] / out["without iov"][1]
    print(f"gradient cost ratio (iov / none): {ratio:.2f}")


if __name__ == "__main__":
    main()
