"""Small data (issue 25): a 12-subject one-compartment oral study (the classic theophylline
design: one 320 mg oral dose, 10 samples over 24 h) fitted by ``pkpd.fit`` and by a plain
hand-written NumPyro model of the same hierarchy, side by side in one process.

Both: log-normal CL, V, ka with between-subject SDs on all three (non-centred), proportional
error, the same priors, 4 chains × (1000 + 1000) run one after another on one device. Printed
per sampler: wall time of the whole call, leapfrog steps per draw, min bulk ESS over the
population-level quantities, ESS per second, and the log-density gradient's cost (ms) at the
same point, so the per-step overhead of pkpd's general machinery shows as a ratio.

    .venv/bin/python benchmarks/bench_small.py [--chains 4] [--warmup 1000] [--draws 1000]
"""

from __future__ import annotations

import argparse
import time

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd
import pandas as pd
from numpyro.infer import MCMC, NUTS

import pkpd

TIMES = (0.25, 0.5, 1.0, 2.0, 3.5, 5.0, 7.0, 9.0, 12.0, 24.0)
DOSE = 320.0  # mg
TRUTH = dict(cl=2.8, v=32.0, ka=1.5, omega=(0.25, 0.15, 0.5), prop=0.1)
PRIORS = {
    "model": {"name": "one_cmt_oral"},
    "parameters": {
        p: {"unit": u, "prior": {"family": "lognormal", "median": m, "sd_log": 1.0},
            "bsv": {"family": "halfnormal", "scale": 0.5}}
        for p, u, m in (("cl", "L/h", 3.0), ("v", "L", 30.0), ("ka", "1/h", 1.0))
    },
    "residual": {"conc": {"model": "proportional", "unit": "ng/mL",
                          "proportional": {"family": "halfnormal", "scale": 0.3}}},
}  # fmt: skip


def data(n=12, seed=4):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        cl, v, ka = (
            TRUTH[k] * np.exp(rng.normal(0, s))
            for k, s in zip(("cl", "v", "ka"), TRUTH["omega"], strict=True)
        )
        k = cl / v
        rows.append(dict(ID=i + 1, TIME=0.0, EVID=1, AMT=DOSE, DV=np.nan))
        for t in TIMES:
            c = 1000 * DOSE * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))
            rows.append(dict(ID=i + 1, TIME=t, EVID=0, AMT=0.0, DV=c * np.exp(rng.normal(0, 0.1))))
    return pd.DataFrame(rows)


def plain_model(t, y, n):
    """The same hierarchy written by hand: Bateman function, non-centred effects."""

    def model(y=None):
        pops = {p: numpyro.sample(f"pop_{p}", nd.LogNormal(np.log(m), 1.0))
                for p, m in (("cl", 3.0), ("v", 30.0), ("ka", 1.0))}  # fmt: skip
        oms = {p: numpyro.sample(f"omega_{p}", nd.HalfNormal(0.5)) for p in pops}
        with numpyro.plate("subject", n):
            z = {p: numpyro.sample(f"z_{p}", nd.Normal(0, 1)) for p in pops}
        th = {p: pops[p] * jnp.exp(oms[p] * z[p]) for p in pops}
        k = th["cl"] / th["v"]
        ka = th["ka"]
        c = (1000 * DOSE * ka / (th["v"] * (ka - k)))[:, None] * (
            jnp.exp(-k[:, None] * t) - jnp.exp(-ka[:, None] * t)
        )
        sig = numpyro.sample("sigma_prop_conc", nd.HalfNormal(0.3))
        numpyro.sample("y", nd.Normal(c, sig * c), obs=y)

    return model


def min_ess(idata, names):
    s = az.ess(idata, var_names=names, method="bulk")
    return float(min(float(s[v].min()) for v in names))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    a = ap.parse_args()
    df = data()
    names = ["pop_cl", "pop_v", "pop_ka", "omega_cl", "omega_v", "omega_ka", "sigma_prop_conc"]

    from pkpd.inference.priors import load_priors
    from pkpd.models import load_model

    priors = load_priors(PRIORS, model=load_model("one_cmt_oral"))
    t0 = time.perf_counter()
    fit = pkpd.fit("one_cmt_oral", df, priors, chains=a.chains, warmup=a.warmup, draws=a.draws,
                   seed=1, progress_bar=False, parameterization="noncentered")  # fmt: skip
    wall_pkpd = time.perf_counter() - t0
    steps_pkpd = float(np.mean(fit.sample_stats["n_steps"].values))
    ess_pkpd = min_ess(fit, names)

    t = jnp.asarray(TIMES)
    y = jnp.asarray(df[df.EVID == 0].DV.to_numpy().reshape(12, len(TIMES)))
    model = plain_model(t, y, 12)
    t0 = time.perf_counter()
    # started at the prior medians (a random start can land in the flip-flop mode, ka <-> k,
    # where the chains stay: measured min ESS 7)
    nuts = NUTS(model, init_strategy=numpyro.infer.init_to_median(num_samples=15))
    mcmc = MCMC(nuts, num_warmup=a.warmup, num_samples=a.draws, num_chains=a.chains,
                chain_method="sequential", progress_bar=False)  # fmt: skip
    mcmc.run(jax.random.PRNGKey(1), y=y, extra_fields=("num_steps",))
    wall_plain = time.perf_counter() - t0
    steps_plain = float(np.mean(mcmc.get_extra_fields()["num_steps"]))
    ess_plain = min_ess(az.from_numpyro(mcmc), names)

    # gradient cost at the same point of each model
    from numpyro.infer.util import initialize_model

    from pkpd.inference.model import build_model
    from pkpd.inference.spec import prepare

    def grad_ms(nm, kwargs):
        info = initialize_model(jax.random.PRNGKey(0), nm, model_kwargs=kwargs)
        g = jax.jit(jax.value_and_grad(info.potential_fn))
        u = info.param_info.z
        jax.block_until_ready(g(u))
        t0 = time.perf_counter()
        for _ in range(500):
            jax.block_until_ready(g(u))
        return (time.perf_counter() - t0) / 500 * 1e3

    spec = prepare("one_cmt_oral", df, priors)
    g_pkpd = grad_ms(build_model(spec), {"obs": jnp.asarray(spec.obs_y)})
    g_plain = grad_ms(model, {"y": y})

    print(f"{'':>8} {'wall s':>8} {'steps/draw':>11} {'min ESS':>8} {'ESS/s':>8} {'grad ms':>8}")
    for name, w, st, e, g in (("pkpd", wall_pkpd, steps_pkpd, ess_pkpd, g_pkpd),
                              ("plain", wall_plain, steps_plain, ess_plain, g_plain)):  # fmt: skip
        print(f"{name:>8} {w:8.1f} {st:11.1f} {e:8.0f} {e / w:8.1f} {g:8.3f}")
    print(f"ESS/s ratio pkpd/plain: {(ess_pkpd / wall_pkpd) / (ess_plain / wall_plain):.2f}; "
          f"gradient cost ratio: {g_pkpd / g_plain:.2f}")  # fmt: skip
    print("pkpd timing_s:", fit.attrs.get("timing_s"))


if __name__ == "__main__":
    main()
