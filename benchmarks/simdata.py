"""Simulated data for the one-compartment oral benchmark (issue 9 b), with a known truth.

Design: ``n`` subjects, 100 mg orally every 12 h x 4 (TIME 0, 12, 24, 36 h, CMT 1 = depot),
10 samples per subject (after the first dose and after the last), concentrations in ng/mL
(CMT 2 = central), proportional residual error 15%, nothing below a quantification limit.

Model (the truth is :data:`TRUTH`; amounts mg, volumes L, clearances L/h, time h)::

    k_i = cl_i / v_i,   log cl_i = log cl + omega_cl z,   (same for v, ka),   z ~ N(0, 1)
    C_i(t) = 1000 · Σ_{doses t_d <= t} amt · ka_i / (v_i (ka_i − k_i))
                    · (exp(−k_i (t − t_d)) − exp(−ka_i (t − t_d)))          (ng/mL)
    DV = C_i(t) · (1 + sigma_prop · eps),   eps ~ N(0, 1)

The concentrations are computed here with numpy, independently of pkpd and of the Stan
programs. The same ``(n_subjects, seed)`` always gives the same file (``numpy.random.
default_rng([seed, n_subjects])``).

Usage::

    .venv/bin/python benchmarks/simdata.py OUTDIR [--subjects 12 100 1000] [--seed 20260901]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

#: Population truth: typical values (L/h, L, 1/h), between-subject SDs (log scale) and the
#: proportional residual SD (fraction).
TRUTH = {
    "cl": 4.0,
    "v": 40.0,
    "ka": 1.2,
    "omega_cl": 0.3,
    "omega_v": 0.25,
    "omega_ka": 0.4,
    "sigma_prop": 0.15,
}
DOSE_MG = 100.0
DOSE_TIMES_H = (0.0, 12.0, 24.0, 36.0)
SAMPLE_TIMES_H = (0.5, 1.0, 2.0, 4.0, 8.0, 11.9, 37.0, 39.0, 42.0, 48.0)
DEFAULT_SEED = 20260901
DEFAULT_SIZES = (12, 100, 1000)


def one_cmt_oral_conc(t, dose_times, dose_mg, cl, v, ka):
    """Central concentration (ng/mL) at times ``t`` after oral boluses into the depot."""
    t = np.asarray(t, dtype=float)[:, None]
    td = np.asarray(dose_times, dtype=float)[None, :]
    dt = t - td
    k = cl / v
    past = dt >= 0
    dts = np.where(past, dt, 0.0)
    unit = np.where(past, (np.exp(-k * dts) - np.exp(-ka * dts)), 0.0)
    return 1000.0 * dose_mg * ka / (v * (ka - k)) * unit.sum(axis=1)


def simulate(n_subjects: int, seed: int = DEFAULT_SEED, truth=None) -> pd.DataFrame:
    """A NONMEM-style dataset (ID, TIME, AMT, DV, EVID, MDV, CMT) of ``n_subjects``."""
    truth = dict(TRUTH if truth is None else truth)
    rng = np.random.default_rng([seed, n_subjects])
    z = rng.standard_normal((n_subjects, 3))
    cl = truth["cl"] * np.exp(truth["omega_cl"] * z[:, 0])
    v = truth["v"] * np.exp(truth["omega_v"] * z[:, 1])
    ka = truth["ka"] * np.exp(truth["omega_ka"] * z[:, 2])
    eps = rng.standard_normal((n_subjects, len(SAMPLE_TIMES_H)))
    rows = []
    for i in range(n_subjects):
        sid = i + 1
        conc = one_cmt_oral_conc(SAMPLE_TIMES_H, DOSE_TIMES_H, DOSE_MG, cl[i], v[i], ka[i])
        dv = conc * (1.0 + truth["sigma_prop"] * eps[i])
        events = [(td, 1, DOSE_MG, np.nan) for td in DOSE_TIMES_H]
        events += [(t, 0, 0.0, y) for t, y in zip(SAMPLE_TIMES_H, dv, strict=True)]
        events.sort(key=lambda e: (e[0], -e[1]))  # at equal times the dose comes first
        for time, evid, amt, y in events:
            rows.append(
                {
                    "ID": sid,
                    "TIME": time,
                    "AMT": amt,
                    "DV": y,
                    "EVID": evid,
                    "MDV": 1 if evid == 1 else 0,
                    "CMT": 1 if evid == 1 else 2,
                }
            )
    df = pd.DataFrame(rows, columns=["ID", "TIME", "AMT", "DV", "EVID", "MDV", "CMT"])
    if (df.loc[df.EVID == 0, "DV"] <= 0).any():
        raise RuntimeError("a simulated observation is <= 0; lower sigma_prop")
    return df


def write(n_subjects: int, outdir, seed: int = DEFAULT_SEED) -> Path:
    """Write ``one_cmt_oral_<n>.csv`` into ``outdir`` and return its path."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / f"one_cmt_oral_{n_subjects}.csv"
    df = simulate(n_subjects, seed)
    with path.open("w", encoding="utf-8") as fh:
        fh.write(f"# SIMULATED by benchmarks/simdata.py (seed {seed}); truth: {TRUTH}\n")
        df.to_csv(fh, index=False, na_rep=".", float_format="%.6g")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--subjects", type=int, nargs="+", default=list(DEFAULT_SIZES))
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = ap.parse_args(argv)
    for n in args.subjects:
        print(write(n, args.outdir, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
