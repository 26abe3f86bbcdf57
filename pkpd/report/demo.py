"""``pkpd demo``: the whole pipeline on the bundled data, validate → fit → simulate → report.

The settings are chosen to finish in a few minutes on a 2-core machine (measured: `make demo`
took 5 min 49 s, 296 s of it the fit, on a 2-core machine shared with other jobs, load ~5), and
are printed with the results:

* data: the bundled synthetic multi-study dataset is validated in full (365 subjects, four
  studies); the fit uses ``temsirolimus_small``, 40 of those subjects from all four studies;
* endpoints: temsirolimus, sirolimus and S6K (closed-form model). VEGF and PD-1 need an ODE
  solve per subject inside every gradient (seconds per gradient), too slow for a demo;
* NUTS with 2 short chains (a MAP start, then 150 warm-up + 150 draws, tree depth <= 6):
  enough for a first look, not for decisions (R-hat and ESS fall short); the report's
  convergence section says so;
* simulation of 25 mg weekly, 75 mg weekly and 175 mg weekly ×3 then 75 mg weekly (12 weeks,
  30-min infusions) for 100 virtual subjects resampled from the data × 50 posterior draws;
* report: every diagnostic, 200 replicates of the trial for VPCs and NPDE, and the probability
  of S6K inhibition at trough (steady state) of at least 80% and 50%.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: The demo's settings (run time: module docstring).
DEMO = {
    "validate": "temsirolimus",
    "data": "temsirolimus_small",
    "model": "temsirolimus",
    "endpoints": ["temsirolimus", "sirolimus", "s6k"],
    "chains": 2,
    "warmup": 150,
    "draws": 150,
    "max_tree_depth": 6,
    "map_steps": 300,
    "seed": 1,
    "regimens": {
        "25 mg weekly": "25 mg q1w x12 over 30 min",
        "75 mg weekly": "75 mg q1w x12 over 30 min",
        "175 mg weekly x3, then 75 mg": "175 mg q1w x3 then 75 mg q1w x9 over 30 min",
    },
    "sim_subjects": 100,
    "sim_draws": 50,
    "targets": ["s6k_inhibition_trough_ss >= 80", "s6k_inhibition_trough_ss >= 50"],
    "replicates": 200,
}

#: Smaller settings for tests (``quick=True``): a MAP fit of the PK endpoints' subjects.
QUICK = {
    **DEMO,
    "method": "map",
    "draws": 100,
    "map_steps": 200,
    "sim_subjects": 30,
    "sim_draws": 20,
    "replicates": 50,
}


def _times(horizon_h: float = 2016.0) -> np.ndarray:
    """Every 4 h over the first and the last week (peaks and troughs), daily in between."""
    week = 168.0
    first = np.arange(0.0, week, 4.0)
    middle = np.arange(week, horizon_h - week, 24.0)
    last = np.arange(horizon_h - week, horizon_h + 1.0, 4.0)
    return np.unique(np.concatenate([first, middle, last]))


def run_demo(
    out="pkpd_demo", *, quick: bool = False, print_fn: Callable[[str], None] = print
) -> dict[str, Path]:
    """Run the demo pipeline and write its files into ``out``.

    Parameters
    ----------
    out : path
        Output folder (created): ``fit.nc``, ``sim.nc`` (+ CSV summaries), ``REPORT.html``.
    quick : bool
        Much smaller settings (a MAP fit, few draws): a smoke test of the pipeline.
    print_fn : callable
        Where progress lines go.

    Returns
    -------
    dict
        Paths of the files written (``fit``, ``simulation``, ``report``).
    """
    import numpyro

    cfg = QUICK if quick else DEMO
    # parallel chains need host devices, set before JAX starts its backend
    numpyro.set_host_device_count(max(cfg["chains"], 1))
    import pkpd
    from pkpd.report import report
    from pkpd.simulate import attainment, format_attainment, save_simulation, simulate

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def step(msg):
        print_fn(f"[{time.perf_counter() - t0:6.1f} s] {msg}")

    method = cfg.get("method", "nuts")
    print_fn("pkpd demo: validate -> fit -> simulate -> report on the bundled SYNTHETIC data")
    print_fn(
        f"settings chosen to run in minutes on a laptop: fit of {cfg['data']} (40 subjects, 4 "
        f"studies), endpoints {', '.join(cfg['endpoints'])} (VEGF and PD-1 need an ODE solve "
        "per gradient: left out); "
        + (
            f"NUTS {cfg['chains']} chains x ({cfg['warmup']} warm-up + {cfg['draws']} draws), "
            f"tree depth <= {cfg['max_tree_depth']}: short chains for a first look"
            if method == "nuts"
            else f"MAP + Laplace ({cfg['draws']} draws): a smoke test"
        )
    )
    # 1. validate
    ds_full, _ = pkpd.datasets.load(cfg["validate"])
    step(f"validated {pkpd.datasets.path(cfg['validate'])}")
    print_fn("  " + ds_full.summary_text().replace("\n", "\n  "))
    ds, _ = pkpd.datasets.load(cfg["data"])
    step(f"validated {pkpd.datasets.path(cfg['data'])}: {ds.n_subjects} subjects")
    # 2. fit
    step(f"fitting ({method})...")
    fit = pkpd.fit(
        cfg["model"],
        ds,
        endpoints=cfg["endpoints"],
        method=method,
        chains=cfg["chains"],
        warmup=cfg["warmup"],
        draws=cfg["draws"],
        seed=cfg["seed"],
        map_steps=cfg["map_steps"],
        max_tree_depth=cfg["max_tree_depth"],
        progress_bar=False,
    )
    fit_path = pkpd.save_fit(fit, out / "fit.nc")
    step(f"fit written to {fit_path}")
    from pkpd.diagnostics import convergence_messages

    for m in convergence_messages(fit):
        print_fn(f"  note: {m}")
    # 3. simulate
    step(
        f"simulating {len(cfg['regimens'])} regimens x {cfg['sim_draws']} posterior draws x "
        f"{cfg['sim_subjects']} virtual subjects..."
    )
    sim = simulate(
        fit,
        cfg["regimens"],
        n_subjects=cfg["sim_subjects"],
        n_draws=cfg["sim_draws"],
        times=_times(),
        seed=cfg["seed"],
        progress_bar=False,
    )
    written = save_simulation(sim, out / "sim.nc", targets=cfg["targets"])
    step(f"simulation written to {', '.join(str(p) for p in written.values())}")
    print_fn(format_attainment(attainment(sim, cfg["targets"])))
    # 4. report
    step("writing the report...")
    rep = report(
        fit,
        sim,
        out / "REPORT.html",
        n_replicates=cfg["replicates"],
        seed=cfg["seed"],
        targets=cfg["targets"],
        title="pkpd demo: temsirolimus (synthetic data)",
    )
    step(f"report: {rep.resolve()}")
    return {"fit": fit_path, "simulation": written["netcdf"], "report": rep}
