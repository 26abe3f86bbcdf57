"""Gradient of the log posterior vs number of subjects (issue 9 d): should grow linearly.

For each size, the data of ``benchmarks/simdata.py`` (one-compartment oral, 100 mg q12h x 4,
10 samples per subject) are laid out by ``pkpd.inference.fit.prepare``, the NumPyro model of
the fit is built (centred subject effects, the benchmark priors), and the compiled
``value_and_grad`` of its potential energy is timed at the prior medians: the median of
``--repeats`` blocks of calls, each block long enough to take ~0.2 s. The log-log slope of
time against subjects is fitted by least squares over the sizes from ``--slope-from`` up
(below that, fixed per-call costs dominate and the slope says nothing about scaling).

    .venv/bin/python benchmarks/bench_grad.py [--subjects 10 30 100 300 1000 3000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def gradient_time(n: int, outdir: Path, repeats: int) -> tuple[float, int]:
    """Median seconds per ``value_and_grad`` call, and the number of observations."""
    import dataclasses

    import jax
    import jax.numpy as jnp
    import simdata
    from numpyro.infer.initialization import init_to_median

    from pkpd.inference import fit as F

    path = simdata.write(n, outdir)
    spec = F.prepare("one_cmt_oral", str(path), HERE / "priors_one_cmt_oral_prop.toml")
    bsv = tuple(p for p in spec.estimated if spec.priors.parameters[p].bsv is not None)
    spec = dataclasses.replace(spec, parameterization="centered", centered=bsv)
    nm = F.build_model(spec)
    obs = jnp.asarray(spec.obs_y)
    u = F._init_function(nm, obs, init_to_median(num_samples=15))(jax.random.PRNGKey(0))
    objective = F._Objective(nm, obs, u)
    x = jax.flatten_util.ravel_pytree(u)[0]
    vg = objective.value_and_grad
    jax.block_until_ready(vg(x))
    t0 = time.perf_counter()
    jax.block_until_ready(vg(x))
    once = max(time.perf_counter() - t0, 1e-6)
    calls = max(5, int(0.2 / once))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            r = vg(x)
        jax.block_until_ready(r)
        times.append((time.perf_counter() - t0) / calls)
    return statistics.median(times), len(spec.obs_y)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subjects", type=int, nargs="+", default=[10, 30, 100, 300, 1000, 3000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--slope-from", type=int, default=100)
    args = ap.parse_args(argv)
    import jax

    import pkpd

    print(
        f"# gradient of the log posterior vs subjects (pkpd {pkpd.__version__}, jax "
        f"{jax.__version__}, {jax.devices()[0].platform})"
    )
    print("| subjects | observations | value+gradient (ms) | per subject (µs) |")
    print("| --- | --- | --- | --- |")
    sizes, secs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.subjects:
            s, n_obs = gradient_time(n, Path(tmp), args.repeats)
            sizes.append(n)
            secs.append(s)
            print(f"| {n} | {n_obs} | {s * 1e3:.3f} | {s / n * 1e6:.2f} |", flush=True)
    use = [i for i, n in enumerate(sizes) if n >= args.slope_from]
    if len(use) >= 2:
        slope = np.polyfit(np.log([sizes[i] for i in use]), np.log([secs[i] for i in use]), 1)[0]
        print(f"\nlog-log slope (subjects >= {args.slope_from}): {slope:.3f} (target <= 1.05)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
