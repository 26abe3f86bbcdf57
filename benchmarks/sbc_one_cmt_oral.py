"""Simulation-based calibration of the one-compartment oral model (issue 23's recorded run).

Design: 10 subjects, 100 mg oral at 0 h, samples at 0.5, 1, 2, 4, 8, 12, 24 h (no LLOQ).
Priors: informative enough to generate plausible data (CL 5 L/h, V 50 L, ka 1.5 1/h, each
lognormal with sd_log 0.3; between-subject SDs halfnormal(0.3); proportional error
halfnormal(0.2)): the bundled weakly informative priors span 4.6 decades of concentration and
let absorption and elimination swap (``pkpd sbc --prior-check`` shows it).

    .venv/bin/python benchmarks/sbc_one_cmt_oral.py --n 200 --workers 2 --out build/sbc

writes ``sbc.nc`` (resumable: ``sbc.nc.replicates/``), ``sbc.html`` and prints the table and
the wall time. Do not time it while other work runs. ``--batch 50`` runs 50 replicates at a
time in one vectorised NUTS program (non-centred, no MAP start: ``pkpd.sbc(batch=)``);
``--broken`` simulates the data with half the residual SD (every deviation from the prediction
halved), which a working check must call suspicious::

    .venv/bin/python benchmarks/sbc_one_cmt_oral.py --n 50 --batch 50 --warmup 150 --draws 150 --out build/sbc_batch
    .venv/bin/python benchmarks/sbc_one_cmt_oral.py --n 50 --batch 50 --warmup 150 --draws 150 --broken --out build/sbc_broken
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import pkpd

PRIORS = """
[model]
name = "one_cmt_oral"

[parameters.cl]
unit = "L/h"
prior = { family = "lognormal", median = 5.0, sd_log = 0.3 }
bsv = { family = "halfnormal", scale = 0.3 }

[parameters.v]
unit = "L"
prior = { family = "lognormal", median = 50.0, sd_log = 0.3 }
bsv = { family = "halfnormal", scale = 0.3 }

[parameters.ka]
unit = "1/h"
prior = { family = "lognormal", median = 1.5, sd_log = 0.3 }
bsv = { family = "halfnormal", scale = 0.3 }

[residual.conc]
model = "proportional"
unit = "ng/mL"
proportional = { family = "halfnormal", scale = 0.2 }
"""


def design(n_subjects: int = 10) -> pd.DataFrame:
    rows = []
    for i in range(1, n_subjects + 1):
        rows.append(dict(ID=i, TIME=0.0, EVID=1, AMT=100.0, DV=np.nan))
        rows += [dict(ID=i, TIME=t, EVID=0, AMT=0.0, DV=1.0) for t in (0.5, 1, 2, 4, 8, 12, 24)]
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="build/sbc")
    ap.add_argument("--batch", type=int, default=None)
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
    batch = {} if a.batch is None else dict(batch=a.batch, parameterization="noncentered")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "priors.toml").write_text(PRIORS)
    design().to_csv(out / "design.csv", index=False, na_rep=".")
    clock = time.perf_counter()
    result = pkpd.sbc("one_cmt_oral", out / "design.csv", out / "priors.toml", n=a.n,
                      chains=a.chains, warmup=a.warmup, draws=a.draws, ranks=99, seed=a.seed,
                      workers=a.workers, out=out / "sbc.nc", **batch)  # fmt: skip
    report(result, out, time.perf_counter() - clock)


def report(result, out: Path, wall: float) -> None:
    """Write ``out/sbc.html`` and print the verdict table, the wall time and divergences."""
    from pkpd.diagnostics import sbc_table
    from pkpd.report.sbc import sbc_report

    sbc_report(result, out / "sbc.html")
    with pd.option_context("display.width", 160, "display.float_format", "{:.3g}".format):
        print(sbc_table(result).to_string(index=False))
    fs = result["fit_seconds"].values
    print(f"{result.sizes['replicate']} replicates in {wall:.0f} s wall; fit seconds median "
          f"{np.median(fs):.1f} (first {fs[0]:.1f}); replicates with divergences "
          f"{int((result['divergences'] > 0).sum())}")  # fmt: skip


if __name__ == "__main__":
    main()
