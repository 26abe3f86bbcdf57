"""Parent → metabolite PK from blocks against the temsirolimus model's own chain (issue 20).

The temsirolimus/sirolimus PK structure (two compartments, a metabolite formed from a fraction
``fm`` of the parent's clearance, molar conversion 914.2/1030.3) written with blocks::

    blocks.PK(compartments=2, endpoint="temsirolimus", code=1,
              metabolite=blocks.Metabolite("sirolimus", molar_masses=(1030.3, 914.2), code=2))

fitted on the phase II study (PH2) of the bundled synthetic data with the temsirolimus PK
benchmark's priors (``priors_temsirolimus_pk.toml``, ``cl_sir``/``v_sir`` renamed to the
block's ``cl_sirolimus``/``v_sirolimus``), side by side in one run: the log-density gradient
of the same fit with

* ``pkpd.models.temsirolimus`` (its hand-wired closed forms, PK endpoints),
* the blocks on the closed forms the structure selects (``engine == "analytic"``),
* the blocks with ``solver="ode"`` (diffrax, Kvaerno5, rtol 1e-8).

Prints compile time, ms per gradient, the log density at the same point (the priors'
medians: equal between the first two up to rounding) and the ratios.

    .venv/bin/python benchmarks/bench_metabolite.py [--repeat 200]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

import pkpd
from pkpd.models import blocks
from pkpd.models.temsirolimus import TemsirolimusModel

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from bench_blocks import compare  # noqa: E402

MW = (1030.3, 914.2)  # g/mol, temsirolimus and sirolimus (pkpd.models.temsirolimus)


def block_model(solver="auto"):
    return blocks.build(
        f"tem_pk_blocks_{solver}",
        blocks.PK(compartments=2, endpoint="temsirolimus", code=1, error="proportional",
                  metabolite=blocks.Metabolite("sirolimus", molar_masses=MW, code=2,
                                               error="proportional")),
        solver=solver,
    )  # fmt: skip


def priors_for(model) -> str:
    text = (HERE / "priors_temsirolimus_pk.toml").read_text()
    text = text.replace("[parameters.cl_sir]", "[parameters.cl_sirolimus]")
    text = text.replace("[parameters.v_sir]", "[parameters.v_sirolimus]")
    return text.replace('name = "temsirolimus"', f'name = "{model.name}"', 1)


def ph2_pk() -> pd.DataFrame:
    df = pd.read_csv(pkpd.datasets.path("temsirolimus"), comment="#", dtype=str)
    df = df[df["STUDY"] == "PH2"]
    return df[(df["EVID"] != "0") | df["DVID"].isin(["1", "2"])].reset_index(drop=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=200)
    a = ap.parse_args()
    df = ph2_pk()
    tmp = Path("build/bench_metabolite")
    tmp.mkdir(parents=True, exist_ok=True)
    bench = HERE / "priors_temsirolimus_pk.toml"
    cases = {"temsirolimus model": (TemsirolimusModel(), a.repeat, {"priors": bench})}
    for solver in ("auto", "ode"):
        m = block_model(solver)
        path = tmp / f"{m.name}.toml"
        path.write_text(priors_for(m))
        # the ODE's seconds per gradient: three suffice
        cases[f"blocks, {m.engine}"] = (m, 3 if solver == "ode" else a.repeat, {"priors": path})
    compare(cases, df, "temsirolimus model", digits=6)


if __name__ == "__main__":
    main()
