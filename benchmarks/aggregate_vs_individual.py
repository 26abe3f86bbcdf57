"""Published arm summaries against the individual data they summarise (issue 22's comparison).

Synthetic one-compartment IV data (truth: CL 5 L/h, V 50 L, between-subject SDs 0.3 on both,
study B's clearance exp(0.25) times study A's): study A, 10 subjects with 7 samples after a
100 mg bolus (10% proportional error); study B, three single-dose arms (100, 300, 1000 mg) of
12 subjects each. Three NUTS fits (2 chains x (300 + 300), seed 1):

* ``individual``: A's and B's individual data (B sampled like A);
* ``aggregate``: A's individual data and B's arms as a publication would give them (mean Cmax
  with SD, geometric mean AUC0-inf with the SD of the logs, of the same 36 subjects);
* ``aggregate x2``: the same with twice the virtual subjects per arm.

Prints each fit's population values and study B's clearance shift (eta_study_cl B - A) as
median [5%, 95%], and writes them as CSV.

    .venv/bin/python benchmarks/aggregate_vs_individual.py --out build/aggregate
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

CL, V, OMEGA, SHIFT_B = 5.0, 50.0, 0.3, 0.25
TIMES = (0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0)
DOSES_B = (100, 300, 1000)


def subjects(rng, study, n, dose, shift, first_id):
    """Individual parameters and data of ``n`` subjects given ``dose`` mg."""
    cl = CL * np.exp(shift + OMEGA * rng.normal(size=n))
    v = V * np.exp(OMEGA * rng.normal(size=n))
    rows = []
    for i in range(n):
        sid = first_id + i
        rows.append(dict(ID=sid, STUDY=study, TIME=0.0, EVID=1, AMT=float(dose), DV="."))
        for t in TIMES:
            c = dose / v[i] * np.exp(-cl[i] / v[i] * t) * 1000.0
            rows.append(dict(ID=sid, STUDY=study, TIME=t, EVID=0, AMT=0.0,
                             DV=c * (1 + 0.1 * rng.normal())))  # fmt: skip
    return cl, v, rows


def make(seed: int = 7):
    rng = np.random.default_rng(seed)
    _, _, rows_a = subjects(rng, "A", 10, 100, 0.0, 1)
    rows_b, arms = [], []
    for k, dose in enumerate(DOSES_B):
        cl, v, rows = subjects(rng, "B", 12, dose, SHIFT_B, 100 + 20 * k)
        rows_b += rows
        cmax, log_auc = dose / v, np.log(dose / cl * 1000.0)
        common = dict(STUDY="B", ARM=f"{dose} mg", REGIMEN=f"{dose} mg once", N=12,
                      ENDPOINT="conc", SOURCE="synthetic", HORIZON_H=72.0)  # fmt: skip
        arms.append(dict(common, METRIC="cmax", STATISTIC="mean", VALUE=cmax.mean(),
                         SPREAD="sd", SPREAD_VALUE=cmax.std(ddof=1), UNIT="mg/L"))  # fmt: skip
        arms.append(dict(common, METRIC="auc_0_inf", STATISTIC="geomean",
                         VALUE=np.exp(log_auc.mean()), SPREAD="sd_log",
                         SPREAD_VALUE=log_auc.std(ddof=1), UNIT="ng*h/mL"))  # fmt: skip
    return pd.DataFrame(rows_a), pd.DataFrame(rows_b), pd.DataFrame(arms)


PRIORS_EXTRA = 'bsv_study = { family = "halfnormal", scale = 0.3 }\n'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="build/aggregate")
    ap.add_argument("--virtual", type=int, default=300)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = (Path(__file__).parents[1] / "priors" / "one_cmt_iv.toml").read_text()
    marker = 'source = "weakly informative: 95% prior mass 0.1-250 L/h"'
    priors = out / "priors.toml"
    priors.write_text(text.replace(marker, PRIORS_EXTRA + marker, 1))
    a, b, arms = make()
    arms.to_csv(out / "arms_B.csv", index=False)
    runs = {
        "individual": dict(data=pd.concat([a, b], ignore_index=True)),
        "aggregate": dict(data=a, aggregate=arms, aggregate_virtual=args.virtual),
        "aggregate x2": dict(data=a, aggregate=arms, aggregate_virtual=2 * args.virtual),
    }
    rows = []
    for name, kw in runs.items():
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AggregateWarning)
            fit = pkpd.fit("one_cmt_iv", kw.pop("data"), priors, chains=2, warmup=300,
                           draws=300, seed=1, progress_bar=False, **kw)  # fmt: skip
        wall = time.perf_counter() - t
        post = fit.posterior
        eta = post["eta_study_cl"].sel(study=["A", "B"]).values.reshape(-1, 2)
        values = {p: post[p].values.ravel() for p in ("pop_cl", "pop_v", "omega_cl", "omega_v")}
        values["shift_B"] = eta[:, 1] - eta[:, 0]
        for q, v in values.items():
            lo, med, hi = np.quantile(v, [0.05, 0.5, 0.95])
            rows.append(dict(fit=name, quantity=q, median=med, q5=lo, q95=hi))
        rows.append(dict(fit=name, quantity="divergences",
                         median=float(fit.sample_stats["diverging"].sum())))  # fmt: skip
        rows.append(dict(fit=name, quantity="seconds", median=wall))
        print(f"{name}: {wall:.0f} s", flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out / "comparison.csv", index=False)
    wide = table.pivot(index="quantity", columns="fit", values="median")
    print(wide.round(3).to_string())
    ci = table.dropna(subset=["q5"]).assign(
        interval=lambda d: d.apply(lambda r: f"{r['median']:.3g} [{r.q5:.3g}, {r.q95:.3g}]", axis=1)
    )
    print(ci.pivot(index="quantity", columns="fit", values="interval").to_string())


if __name__ == "__main__":
    main()
