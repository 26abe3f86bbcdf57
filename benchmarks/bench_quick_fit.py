"""The quick fit (``method="map"``) against the old joint mode and a short NUTS run (issue 27).

On the bundled ``temsirolimus_small`` data (40 subjects, four studies), PK endpoints
(temsirolimus, sirolimus), the bundled temsirolimus priors: population values and
between-subject SDs of

* ``map``: ``pkpd.fit(method="map")``, the mode of the population values with the subject
  effects integrated out (:mod:`pkpd.inference.laplace`), median of its Laplace draws;
* ``joint``: the joint posterior mode over population values and subject effects (what
  ``method="map"`` returned before; still NUTS's start), by the same L-BFGS as ``pkpd.fit``;
* ``nuts``: posterior medians of a short NUTS run (``--chains`` × (``--warmup`` + ``--draws``));

with the truth the data were simulated from, and the wall time of each. Prints a Markdown table.

    .venv/bin/python benchmarks/bench_quick_fit.py [--chains 2 --warmup 300 --draws 300]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")


def joint_mode(model, ds, endpoints, seed, map_steps):
    """Population values at the joint mode (population values and subject effects)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from numpyro.infer.util import constrain_fn

    from pkpd.inference import fit as F

    spec = F.prepare(model, ds, endpoints=endpoints)
    nm = F.build_model(spec)
    obs = jnp.asarray(np.where(spec.obs_blq, np.nan_to_num(spec.obs_lloq, nan=1.0), spec.obs_y))
    k_map = jax.random.split(jax.random.PRNGKey(seed), 4)[0]
    x0, objective = F._valid_start(nm, obs, k_map)
    x, _ = F._map_estimate(objective, x0, max_iter=map_steps)
    vals = constrain_fn(nm, (), {"obs": obs}, objective.unravel(jnp.asarray(x)))
    return {k: float(v) for k, v in vals.items() if np.ndim(v) == 0}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--map-steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    a = ap.parse_args(argv)

    import numpyro

    numpyro.set_host_device_count(a.chains)
    import pkpd
    from pkpd.datasets import load

    ds, truth = load("temsirolimus_small")
    eps = ["temsirolimus", "sirolimus"]
    res, wall = {}, {}
    t = time.perf_counter()
    f = pkpd.fit(
        "temsirolimus",
        ds,
        endpoints=eps,
        method="map",
        draws=200,
        map_steps=a.map_steps,
        seed=a.seed,
        progress_bar=False,
    )
    wall["map"] = time.perf_counter() - t
    res["map"] = {
        k: float(f.posterior[k].median()) for k in f.posterior.data_vars if f.posterior[k].ndim == 2
    }
    attrs = {k: f.attrs[k] for k in f.attrs if k.startswith(("map_", "laplace_"))}
    t = time.perf_counter()
    res["joint"] = joint_mode("temsirolimus", ds, eps, a.seed, a.map_steps)
    wall["joint"] = time.perf_counter() - t
    t = time.perf_counter()
    n = pkpd.fit(
        "temsirolimus",
        ds,
        endpoints=eps,
        chains=a.chains,
        warmup=a.warmup,
        draws=a.draws,
        seed=a.seed,
        progress_bar=False,
    )
    wall["nuts"] = time.perf_counter() - t
    res["nuts"] = {
        k: float(n.posterior[k].median()) for k in n.posterior.data_vars if n.posterior[k].ndim == 2
    }
    import arviz as az

    pop = [k for k in res["nuts"] if k.startswith(("pop_", "omega_"))]
    rhat = az.rhat(n.posterior[pop])
    div = int(n.sample_stats["diverging"].sum())
    tv = {
        **{f"pop_{k}": v for k, v in truth["typical"].items()},
        **{f"omega_{k}": v for k, v in truth["omega"].items()},
        **{f"omega_study_{k}": v for k, v in truth["omega_study"].items()},
    }
    print(
        f"wall s: map {wall['map']:.0f}, joint {wall['joint']:.0f}, nuts {wall['nuts']:.0f}; "
        f"NUTS max R-hat {float(max(rhat[k] for k in pop)):.3f}, divergences {div}"
    )
    print("map attrs:", json.dumps(attrs))
    print(
        "| quantity | truth | map (new) | joint mode (old map) | NUTS median | new/NUTS | old/NUTS |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for k in sorted(pop):
        nv, mv, jv = res["nuts"][k], res["map"].get(k), res["joint"].get(k)
        print(
            f"| {k} | {tv.get(k, float('nan')):.4g} | {mv:.4g} | {jv:.4g} | {nv:.4g} | "
            f"{mv / nv:.2f} | {jv / nv:.2f} |"
        )
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"wall": wall, "res": res, "attrs": attrs, "truth": tv}, fh, indent=1)


if __name__ == "__main__":
    main()
