"""Recovery of a model built from blocks at the issue's size (issue 20): one-compartment oral PK
+ an indirect response (type I), 30 synthetic subjects (notebook 03's design and truth), NUTS
4 × (500 + 500). Prints the fit time, how many 90% credible intervals cover the truth, and the
table.

    .venv/bin/python benchmarks/recovery_blocks.py
"""

from __future__ import annotations

import time

import numpyro

numpyro.set_host_device_count(4)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import pkpd  # noqa: E402
from pkpd import diagnostics as dx  # noqa: E402
from pkpd.models import blocks  # noqa: E402
from pkpd.models.predict import predict_dataset  # noqa: E402

TRUTH = {"cl": 3.0, "v": 30.0, "ka": 1.2, "marker_base": 100.0, "marker_kout": 0.15,
         "marker_imax": 0.8, "marker_ic50": 1500.0}  # fmt: skip
OMEGA = {"cl": 0.3, "v": 0.2, "ka": 0.3, "marker_base": 0.2}
SIGMA = 0.1


def main():
    model = blocks.build(
        "oral_idr",
        blocks.PK(compartments=1, absorption="first_order", code=1, error="proportional"),
        blocks.IndirectResponse("marker", kind=1, unit="U/L", code=2, error="proportional"),
        typical=TRUTH,
        variability={"cl": 0.5, "v": 0.5, "ka": 0.5, "marker_base": 0.5},
    )
    rng = np.random.default_rng(2026)
    rows = []
    for i in range(1, 31):
        rows += [dict(ID=i, TIME=t, EVID=1, AMT=200.0, CMT=1, DVID=1, DV=0.0) for t in (0.0, 24.0)]
        rows += [dict(ID=i, TIME=t, EVID=0, AMT=0.0, CMT=2, DVID=1, DV=0.0)
                 for t in (0.5, 1, 2, 4, 8, 12, 23)]  # fmt: skip
        rows += [dict(ID=i, TIME=t, EVID=0, AMT=0.0, CMT=2, DVID=2, DV=0.0)
                 for t in (2, 8, 23, 48, 72, 96)]  # fmt: skip
    table = pd.DataFrame(rows).sort_values(
        ["ID", "TIME", "EVID"], ascending=[True, True, False], kind="stable"
    )
    table = table.reset_index(drop=True)
    ids = table["ID"].unique()
    columns = {}
    for name, value in TRUTH.items():
        individual = value * np.exp(OMEGA.get(name, 0.0) * rng.standard_normal(len(ids)))
        table[f"I_{name}"] = table["ID"].map(dict(zip(ids, individual, strict=True)))
        columns[name] = f"I_{name}"
    pred = predict_dataset(pkpd.read_dataset(table, model=model), model, columns)
    obs = table["EVID"].to_numpy() == 0
    table["DV"] = np.where(obs, pred * np.exp(SIGMA * rng.standard_normal(len(table))), np.nan)
    data = table.drop(columns=list(columns.values()))

    start = time.time()
    fit = pkpd.fit(model, data, chains=4, warmup=500, draws=500, seed=2026, progress_bar=False)
    elapsed = time.time() - start
    tab = dx.parameter_table(fit)
    truth = {f"pop_{k}": v for k, v in TRUTH.items()} | {f"omega_{k}": v for k, v in OMEGA.items()}
    truth |= {"sigma_prop_conc": SIGMA, "sigma_prop_marker": SIGMA}
    rec = tab.loc[
        [k for k in truth if k in tab.index], ["median", "q5", "q95", "r_hat", "ess_bulk"]
    ]
    rec.insert(0, "truth", [truth[k] for k in rec.index])
    rec["covered"] = (rec["q5"] <= rec["truth"]) & (rec["truth"] <= rec["q95"])
    divergences = int(fit.sample_stats["diverging"].sum())
    print(
        f"fit {elapsed:.0f} s; {int(rec['covered'].sum())} of {len(rec)} 90% CrIs cover the truth;"
    )
    print(f"divergences {divergences}")
    print(rec.round(4).to_string())


if __name__ == "__main__":
    main()
