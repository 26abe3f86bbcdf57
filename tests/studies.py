"""A small simulated one-compartment IV study, its priors and its quick fit, and a small
simulation shaped like ``pkpd.simulate``'s output: shared by the diagnostics and report tests.

:func:`simulate_study` draws the data from :data:`TRUTH` (so tests can compare a fit, a VPC or
NPDE with the truth the data came from); :data:`PRIORS` carries HTML-special characters on
purpose (the report must escape them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import xarray as xr

import pkpd
from pkpd.models import load_model

TRUTH = {"cl": 2.0, "v": 30.0, "omega_cl": 0.3, "omega_v": 0.2, "prop": 0.1, "wt_exp": 0.75}
LLOQ = 700.0  # ng/mL: about a third of the 24 h samples of study A fall below

PRIORS = """# test priors <b>bold</b> & "quoted" <script>alert(1)</script>
[model]
name = "one_cmt_iv"

[parameters.cl]
unit = "L/h"
prior = { family = "lognormal", median = 2.0, sd_log = 0.5 }
bsv = { family = "halfnormal", scale = 0.5 }
bsv_study = { family = "halfnormal", scale = 0.1 }

[parameters.v]
unit = "L"
prior = { family = "lognormal", median = 30.0, sd_log = 0.5 }
bsv = { family = "halfnormal", scale = 0.5 }

[covariates.cl_wt]
parameter = "cl"
covariate = "WT"
form = "power"
reference = 70.0
unit = "kg"
prior = { family = "fixed", value = 0.75 }

[residual.conc]
model = "proportional"
unit = "ng/mL"
proportional = { family = "halfnormal", scale = 0.3 }
"""


def simulate_study(
    n_per_study: int = 30, *, seed: int = 11, ids=None, studies=("A", "B")
) -> pd.DataFrame:
    """A two-study one-compartment IV trial simulated from :data:`TRUTH`, with BLQ data.

    Study A: one 100 mg dose; study B: 100 mg at 0 and 12 h (ADDL). Samples 0.25-24 h.
    """
    rng = np.random.default_rng(seed)
    times = [0.25, 1, 2, 4, 8, 12, 16, 24]
    rows = []
    S = n_per_study * len(studies)
    wt = rng.uniform(50, 100, S)
    for i in range(S):
        sid = ids(i) if ids else str(i + 1)
        st = studies[i // n_per_study]
        addl = 1 if st == studies[1] else 0
        base = dict(ID=sid, STUDY=st, WT=round(wt[i], 1), LLOQ=LLOQ)
        rows.append(dict(base, TIME=0.0, EVID=1, AMT=100.0, II=12.0, ADDL=addl, DV=np.nan))
        rows += [dict(base, TIME=t, EVID=0, AMT=0.0, II=0.0, ADDL=0, DV=1.0) for t in times]
    df = pd.DataFrame(rows)
    pad = pkpd.read_dataset(df).to_arrays()
    eta = rng.normal(0, [TRUTH["omega_cl"], TRUTH["omega_v"]], size=(S, 2))
    wt_s = pad.covariate("WT")
    params = {
        "cl": TRUTH["cl"] * (wt_s / 70.0) ** TRUTH["wt_exp"] * np.exp(eta[:, 0]),
        "v": TRUTH["v"] * np.exp(eta[:, 1]),
    }
    m = load_model("one_cmt_iv")
    pred = np.asarray(jax.vmap(m.predict)(params, jax.tree.map(jnp.asarray, pad.data))["conc"])
    y = pred * (1 + TRUTH["prop"] * rng.normal(size=pred.shape))
    mask = np.asarray(pad.data.point_mask)
    rows_of = np.asarray(pad.data.point_row)[mask]
    df.loc[df.index[rows_of], "DV"] = np.round(y[mask], 3)
    blq = (df.EVID == 0) & (df.DV < LLOQ)
    df["BLQ"] = blq.astype(int)
    df.loc[blq, "DV"] = np.nan
    return df


def quick_fit(df, priors_path, **kw):
    return pkpd.fit(
        "one_cmt_iv",
        df,
        priors_path,
        method="map",
        draws=100,
        map_steps=300,
        seed=2,
        progress_bar=False,
        **kw,
    )


def fake_simulation(seed=0) -> xr.Dataset:
    """A small simulation shaped like pkpd.simulate's output."""
    rng = np.random.default_rng(seed)
    regs = ["25 mg q1w", "75 mg q1w", "175 mg q1w x3 then 75 mg q1w"]
    dose = np.array([25.0, 75.0, 175.0])
    D, S = 20, 30
    t = np.linspace(0, 168, 25)
    cl = np.exp(rng.normal(np.log(16), 0.3, size=(1, D, S)))
    conc = dose[:, None, None, None] / 35 * 1000 * np.exp(-cl[..., None] / 35 * t)
    auc = dose[:, None, None] * 1000 / cl * np.ones((3, 1, 1))
    inhib = 100 * auc / (auc + 2000.0)
    ds = xr.Dataset(
        {
            "temsirolimus": (("regimen", "draw", "subject", "time"), conc, {"units": "ng/mL"}),
            "cmax_temsirolimus_c1": (
                ("regimen", "draw", "subject"),
                conc[..., 0],
                {"units": "ng/mL", "long_name": "Cmax, cycle 1"},
            ),
            "auc_tau_sirolimus_ss": (
                ("regimen", "draw", "subject"),
                auc,
                {"units": "ng.h/mL", "long_name": "AUC over a dosing interval"},
            ),
            "s6k_inhibition_trough_ss": (
                ("regimen", "draw", "subject"),
                inhib,
                {"units": "%", "long_name": "S6K inhibition at trough"},
            ),
            "cov_BSA": (("subject",), rng.uniform(1.5, 2.2, S), {"units": "m2"}),
        },  # fmt: skip
        coords={"regimen": regs, "draw": np.arange(D), "subject": np.arange(S), "time": t},
        attrs={"pkpd_simulation": 1},
    )
    return ds


def weekly_occasions_design(n, occasions, times=(0.5, 2.0, 6.0, 12.0, 24.0), rate=0.0):
    """``n`` subjects given 100 mg IV once a week (``rate`` mg/h, 0 for a bolus), each week an
    occasion (``OCC`` 1, 2, ...), sampled at ``times`` (h) after each dose (DV 1.0, a
    placeholder): the design of the inter-occasion variability tests."""
    rows = []
    for i in range(n):
        for k in range(occasions):
            t0 = 168.0 * k
            rows.append(dict(ID=i + 1, TIME=t0, EVID=1, AMT=100.0, RATE=rate, DV=np.nan, OCC=k + 1))
            rows += [
                dict(ID=i + 1, TIME=t0 + t, EVID=0, AMT=0.0, RATE=0.0, DV=1.0, OCC=k + 1)
                for t in times
            ]
    return pd.DataFrame(rows)
