"""The bundled PH2 arm summaries against PH2's individual records (issue 22, on the bundled data).

Temsirolimus and sirolimus PK (the temsirolimus model, its bundled priors, PK endpoints only),
NUTS 2 chains x (WARMUP + DRAWS), seed 1:

* ``individual``: the individual records of PH1 (24 subjects, rich) and PH2 (111, sparse);
* ``aggregate``: PH1's records and PH2's three dose arms as ``ph2_arm_summaries.csv`` gives them
  (first-week Cmax and AUC of both analytes per arm, from the stored truth), with ``--virtual``
  virtual subjects per arm.

Prints each fit's population values and PH2's between-study effects on the two clearances
(median [5%, 95%]) beside the truth (truth.json), the wall time, divergences; writes CSV.

    .venv/bin/python benchmarks/aggregate_temsirolimus.py --out build/aggregate_tem
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import pkpd
from pkpd.inference.aggregate import AggregateWarning

PK = ("cl", "v1", "q", "v2", "cl_sir", "v_sir")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="build/aggregate_tem")
    ap.add_argument("--virtual", type=int, default=600)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--draws", type=int, default=300)
    ap.add_argument("--only", choices=("individual", "aggregate"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = pd.read_csv(pkpd.datasets.path("temsirolimus"), comment="#", dtype=str)
    data = data[data.STUDY.isin(["PH1", "PH2"]) & data.DVID.isin([".", "1", "2"])]
    _, truth = pkpd.datasets.load("temsirolimus")
    runs = {
        "individual": dict(data=data),
        "aggregate": dict(
            data=data[data.STUDY == "PH1"],
            aggregate=pkpd.datasets.summaries("temsirolimus_ph2"),
            aggregate_virtual=args.virtual,
        ),
    }
    if args.only:
        runs = {args.only: runs[args.only]}
    rows = []
    for name, kw in runs.items():
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AggregateWarning)
            fit = pkpd.fit("temsirolimus", kw.pop("data"), endpoints=["temsirolimus", "sirolimus"],
                           chains=2, warmup=args.warmup, draws=args.draws, seed=1,
                           progress_bar=False, **kw)  # fmt: skip
        wall = time.perf_counter() - t
        post = fit.posterior
        values = {f"pop_{p}": post[f"pop_{p}"].values.ravel() for p in PK}
        want = {f"pop_{p}": truth["typical"][p] for p in PK}
        for p in ("cl", "cl_sir"):
            values[f"PH2 study effect {p}"] = post[f"eta_study_{p}"].sel(study="PH2").values.ravel()
            want[f"PH2 study effect {p}"] = truth["study_eta"]["PH2"][p]
            values[f"omega_{p}"] = post[f"omega_{p}"].values.ravel()
            want[f"omega_{p}"] = truth["omega"][p]
        for q, v in values.items():
            lo, med, hi = np.quantile(v, [0.05, 0.5, 0.95])
            rows.append(dict(fit=name, quantity=q, median=med, q5=lo, q95=hi, truth=want[q]))
        rows.append(dict(fit=name, quantity="divergences",
                         median=float(fit.sample_stats["diverging"].sum())))  # fmt: skip
        rows.append(dict(fit=name, quantity="seconds", median=wall))
        print(f"{name}: {wall:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / "comparison.csv", index=False)
    ci = table.dropna(subset=["q5"]).assign(
        interval=lambda d: d.apply(lambda r: f"{r['median']:.3g} [{r.q5:.3g}, {r.q95:.3g}]", axis=1)
    )
    wide = ci.pivot(index="quantity", columns="fit", values="interval")
    wide["truth"] = ci.groupby("quantity").truth.first()
    print(wide.to_string())
    print(table[table.q5.isna()].pivot(index="quantity", columns="fit", values="median"))


if __name__ == "__main__":
    main()
