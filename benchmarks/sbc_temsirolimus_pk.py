"""Simulation-based calibration of a reduced temsirolimus PK model (issue 23's recorded run).

Model: the registered ``temsirolimus`` model, PK endpoints only (temsirolimus and sirolimus in
whole blood, ng/mL): two compartments for the parent, sirolimus formed from a fixed fraction
``fm`` = 0.36 of its clearance (molar), one compartment for sirolimus.
Design: 10 subjects, 25 mg over 30 min at 0 h (the label's dose), both analytes sampled at
0.25, 0.5, 1, 2, 4, 8, 24, 48, 96 and 168 h (no LLOQ).
Priors: those of the temsirolimus PK benchmark (``benchmarks/priors_temsirolimus_pk.toml``,
every median and SD with its source there), reduced: between-subject variability on ``cl``,
``v1`` and ``cl_sir`` only (ten subjects inform little more), proportional error on each
analyte. 11 population quantities plus the test quantities of ``pkpd.sbc``.

    .venv/bin/python benchmarks/sbc_temsirolimus_pk.py --n 200 --batch 50 --out build/sbc_tem

writes ``sbc.nc`` (resumable: ``sbc.nc.replicates/``), ``sbc.html`` and prints the table and
the wall time. Do not time it while other work runs. ``--batch 50`` runs 50 replicates at a
time in one vectorised NUTS program (non-centred, started at the prior medians:
``pkpd.sbc(batch=)``); without it every replicate is a full ``pkpd.fit`` (MAP start, Laplace
mass matrix, automatic centring).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
from sbc_one_cmt_oral import report

import pkpd

HERE = Path(__file__).resolve().parent
TIMES_H = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 24.0, 48.0, 96.0, 168.0)


def priors() -> str:
    """The benchmark's priors with between-subject variability kept on cl, v1 and cl_sir."""
    text = (HERE / "priors_temsirolimus_pk.toml").read_text()
    blocks = text.split("\n[")
    kept = []
    for b in blocks:
        name = b.split("]", 1)[0]
        if name in ("parameters.v2", "parameters.v_sir"):
            b = "\n".join(line for line in b.splitlines() if not line.startswith("bsv"))
        kept.append(b)
    out = "\n[".join(kept)
    out = (
        "# Written by benchmarks/sbc_temsirolimus_pk.py from benchmarks/priors_temsirolimus_pk.toml:\n"
        "# the same entries and sources, without the bsv of v2 and v_sir.\n"
    ) + out
    out = out.replace(
        'description = "benchmark: temsirolimus -> sirolimus PK, BSV on cl, v1, v2, cl_sir, '
        'v_sir, proportional error"',
        'description = "SBC: temsirolimus -> sirolimus PK, BSV on cl, v1, cl_sir, proportional '
        'error"',
    )
    return out


def design(n_subjects: int = 10) -> pd.DataFrame:
    rows = []
    for i in range(1, n_subjects + 1):
        rows.append(dict(ID=i, TIME=0.0, EVID=1, AMT=25.0, RATE=50.0, CMT=1, DVID=".", DV="."))
        for t in TIMES_H:
            rows += [dict(ID=i, TIME=t, EVID=0, AMT=0.0, RATE=0.0, CMT=0, DVID=code, DV=1.0)
                     for code in (1, 2)]  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="build/sbc_tem")
    ap.add_argument("--batch", type=int, default=None)
    a = ap.parse_args()
    batch = {} if a.batch is None else dict(batch=a.batch, parameterization="noncentered")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "priors.toml").write_text(priors())
    design().to_csv(out / "design.csv", index=False)
    clock = time.perf_counter()
    result = pkpd.sbc("temsirolimus", out / "design.csv", out / "priors.toml", n=a.n,
                      chains=a.chains, warmup=a.warmup, draws=a.draws, ranks=99, seed=a.seed,
                      out=out / "sbc.nc", endpoints=["temsirolimus", "sirolimus"],
                      **batch)  # fmt: skip
    report(result, out, time.perf_counter() - clock)


if __name__ == "__main__":
    main()
