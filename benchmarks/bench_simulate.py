"""Dose simulation speed: 200 draws x 1,000 subjects x 3 regimens x 12 weeks, joint PK/PD.

Run from the repository root::

    .venv/bin/python benchmarks/bench_simulate.py                 # the issue's size
    .venv/bin/python benchmarks/bench_simulate.py --devices 2     # split over 2 host devices
    .venv/bin/python benchmarks/bench_simulate.py --quick         # 20 draws, a smoke run

The posterior is SYNTHETIC: :func:`pkpd.simulate.fit_from_values` around the bundled dataset's
simulation truth (``datasets/temsirolimus/truth.json``; population values spread by 10% across
the 200 draws, the true between-subject and between-study SDs and covariate effects), because a
joint NUTS fit of all five endpoints takes far longer than the simulation it feeds. Covariates
are resampled from the 40 subjects of ``temsirolimus_small``.

Rows printed (wall-clock and CPU seconds of this process, all threads; compilation included):

* ``joint PK/PD``: temsirolimus, sirolimus, S6K, VEGF and PD-1, the step-by-step engine
  (exact linear PK and S6K; VEGF/PD-1 by an exponential integrator on the grid);
* ``PK + S6K``: the closed-form endpoints only (same engine, no turnover states);
* ``model.predict`` (diffrax VEGF/PD-1): the model's own ``predict`` on two small slices
  (2 and 6 draws x 50 subjects), the cost per subject from their difference, extrapolated to
  the full size, to show what the step-by-step engine saves.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

REGIMENS = [
    "25 mg q1w x12 over 30 min",
    "175 mg q1w x3 then 75 mg q1w x9 over 30 min",
    "15 mg/m2 q1w x12 over 30 min",
]
TARGET_S = 60.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--subjects", type=int, default=1000)
    ap.add_argument("--devices", type=int, default=1, help="host devices (XLA_FLAGS)")
    ap.add_argument("--chunk-size", type=int, default=2048)
    ap.add_argument("--quick", action="store_true", help="20 draws (smoke run)")
    ap.add_argument("--skip-predict", action="store_true", help="no model.predict comparison")
    args = ap.parse_args()
    if args.quick:
        args.draws = 20
    if args.devices > 1:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.devices}"
        )
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import json

    import jax

    import pkpd
    from pkpd.simulate import fit_from_values, simulate

    truth = json.loads((pkpd.datasets.datasets_dir() / "temsirolimus" / "truth.json").read_text())
    ds, _ = pkpd.datasets.load("temsirolimus_small")
    t0 = time.perf_counter()
    fit = fit_from_values(
        "temsirolimus",
        ds,
        truth["typical"],
        omega=truth["omega"],
        omega_study=truth["omega_study"],
        effects={k: v["value"] for k, v in truth["covariate_effects"].items()},
        n_draws=args.draws,
        uncertainty=0.1,
        seed=1,
    )
    t_fit = time.perf_counter() - t0
    n_sims = args.draws * args.subjects * len(REGIMENS)
    print(
        f"pkpd simulate benchmark: {args.draws} draws x {args.subjects} subjects x "
        f"{len(REGIMENS)} regimens x 12 weeks = {n_sims:,} subject-regimens; "
        f"{jax.device_count()} {jax.devices()[0].platform} device(s), {os.cpu_count()} cores; "
        f"synthetic posterior built in {t_fit:.1f} s"
    )
    rows = []
    load0 = os.getloadavg()[0]

    def run(label, **kw):
        t, c = time.perf_counter(), time.process_time()
        sim = simulate(
            fit,
            REGIMENS,
            n_subjects=args.subjects,
            n_draws=args.draws,
            seed=1,
            chunk_size=args.chunk_size,
            progress_bar=False,
            **kw,
        )
        dt = time.perf_counter() - t
        rows.append((label, dt, time.process_time() - c, sim.nbytes / 1e9))
        return sim, dt

    sim, t_joint = run("joint PK/PD (5 endpoints)")
    run("PK + S6K (closed form)", endpoints=["temsirolimus", "sirolimus", "s6k"])
    med = float(sim["s6k_inhibition_trough_ss"].median())
    if not args.skip_predict:
        # the engine that calls model.predict (VEGF/PD-1 by diffrax), warm, on 3 x 300
        # subject-regimens, scaled to the full size
        rows.append(
            ("model.predict, diffrax PD (extrapolated)", *_predict_cost(fit, args), float("nan"))
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    load = os.getloadavg()
    print(
        f"{'run':<42} {'wall s':>8} {'vs 60 s':>8} {'CPU s':>8} {'wall us/sim':>12} "
        f"{'output GB':>10}"
    )
    for label, dt, cpu, gb in rows:
        print(
            f"{label:<42} {dt:8.1f} {dt / TARGET_S:7.2f}x {cpu:8.1f} {dt / n_sims * 1e6:12.1f} "
            f"{gb:10.2f}"
        )
    print(
        f"ratio model.predict / joint: {rows[-1][1] / t_joint:.0f}x"
        if not args.skip_predict
        else ""
    )
    print(
        f"peak resident memory {peak:.2f} GB; median S6K inhibition at steady-state trough "
        f"{med:.1f}%; load average at the start {load0:.1f}, at the end {load[0]:.1f} (other "
        "processes on the machine share its cores: compare CPU s across machines)"
    )
    return 0


def _predict_cost(fit, args):
    """Wall and CPU seconds of the ``model.predict`` engine, scaled to the benchmark's size."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import pkpd
    from pkpd.inference.posterior import restore_spec
    from pkpd.simulate.engines import PredictEngine
    from pkpd.simulate.plan import build_grid, plan_regimen

    spec = restore_spec(fit)
    eng = PredictEngine(spec.model, list(spec.model.endpoints))
    horizon = 12 * 168.0
    plans = [plan_regimen(r, pkpd.Regimen(r), horizon) for r in REGIMENS]
    grid = build_grid(plans, horizon, np.arange(0.0, horizon + 1, 24.0), (1344.0,), full=False)
    g = {
        k: jnp.asarray(getattr(grid, k)) for k in ("t", "win", "dose_time", "dose_dur", "dose_mask")
    }
    n = 100
    rng = np.random.default_rng(0)
    from pkpd.models.temsirolimus import TYPICAL

    params = {k: jnp.asarray(v * np.exp(rng.normal(0, 0.2, n))) for k, v in TYPICAL.items()}
    amounts = jnp.asarray(
        np.stack([np.pad(p.amount * 1.85, (0, grid.dose_time.shape[1] - p.n_doses)) for p in plans])
    )

    def one(th):
        return jax.vmap(lambda a, gr: eng.run(th, a, gr)[0])(amounts, g)

    f = jax.jit(jax.vmap(one))
    jax.block_until_ready(f(params))
    t, c = time.perf_counter(), time.process_time()
    jax.block_until_ready(f(params))
    scale = args.draws * args.subjects / n
    return (time.perf_counter() - t) * scale, (time.process_time() - c) * scale


if __name__ == "__main__":
    sys.exit(main())
