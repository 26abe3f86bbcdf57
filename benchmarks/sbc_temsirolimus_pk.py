"""Simulation-based calibration of a reduced temsirolimus PK model (issue 23's recorded run).

The model: temsirolimus (two compartments) → sirolimus (one compartment), the temsirolimus PK
benchmark's priors (``priors_temsirolimus_pk.toml``: the bundled priors' PK entries, ``fm``
fixed, no covariates or study effects, proportional error) with the between-subject SD
priors tightened to half-normal(0.2) so that prior draws give plausible trials. Design: 12
subjects, 25 mg over 30 min at 0 h (the label regimen's first dose), both analytes sampled at
0.5, 1, 2, 4, 8, 24, 48, 96 and 168 h, no LLOQ.

    .venv/bin/python benchmarks/sbc_temsirolimus_pk.py --n 200 --batch 50 --out build/sbc_tem

writes ``sbc.nc`` (resumable), ``sbc.html`` and prints the table and the wall time. Replicates
run batched (``pkpd.sbc(batch=)``: one vectorised NUTS program per batch, non-centred, started
at the prior medians). ``--broken`` simulates with half the residual SD (a working check must
call the residual SDs suspicious).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

import pkpd

HERE = Path(__file__).parent
TIMES = (0.5, 1, 2, 4, 8, 24, 48, 96, 168)


def priors_text() -> str:
    """The benchmark's priors with every between-subject SD prior half-normal(0.2)."""
    text = (HERE / "priors_temsirolimus_pk.toml").read_text()
    return re.sub(r"bsv = \{ family = \"halfnormal\", scale = [0-9.]+ \}",
                  'bsv = { family = "halfnormal", scale = 0.2 }', text)  # fmt: skip


def design(n_subjects: int = 12) -> pd.DataFrame:
    rows = []
    for i in range(1, n_subjects + 1):
        rows.append(dict(ID=i, TIME=0.0, EVID=1, AMT=25.0, DUR=0.5, DV=np.nan, DVID=0))
        for t in TIMES:
            for dvid in (1, 2):
                rows.append(dict(ID=i, TIME=float(t), EVID=0, AMT=0.0, DUR=0.0, DV=1.0, DVID=dvid))
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--subjects", type=int, default=12)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="build/sbc_tem")
    ap.add_argument("--broken", action="store_true")
    a = ap.parse_args()
    if a.broken:
        from pkpd.inference import sbc as S

        real = S._prior_draws

        def halved(spec, seed, indices):
            drawn = real(spec, seed, indices)
            for values, parts, _ in drawn.values():
                values["y"] = parts["f"] + 0.5 * (values["y"] - parts["f"])
            return drawn

        S._prior_draws = halved
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "priors.toml").write_text(priors_text())
    design(a.subjects).to_csv(out / "design.csv", index=False, na_rep=".")
    clock = time.perf_counter()
    result = pkpd.sbc("temsirolimus", out / "design.csv", out / "priors.toml", n=a.n,
                      chains=a.chains, warmup=a.warmup, draws=a.draws, ranks=99, seed=a.seed,
                      out=out / "sbc.nc", batch=a.batch,
                      parameterization="noncentered")  # fmt: skip
    wall = time.perf_counter() - clock
    from pkpd.diagnostics import sbc_table
    from pkpd.report.sbc import sbc_report

    sbc_report(result, out / "sbc.html")
    with pd.option_context("display.width", 160, "display.float_format", "{:.3g}".format):
        print(sbc_table(result).to_string(index=False))
    fs = result["fit_seconds"].values
    print(f"{a.n} replicates in {wall:.0f} s wall; fit seconds per replicate median "
          f"{np.median(fs):.1f}; replicates with divergences "
          f"{int((result['divergences'] > 0).sum())}")  # fmt: skip


if __name__ == "__main__":
    main()
