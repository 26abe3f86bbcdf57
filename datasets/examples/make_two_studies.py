"""Generate datasets/examples/two_studies.csv: a small, SYNTHETIC two-study example file.

It exists to show the NONMEM-style layout pkpd reads (several studies, mg and mg/m2 doses,
ADDL, an endpoint column, LLOQ/BLQ, covariates) and to run ``pkpd validate`` in ``make demo``.
It is not trial data. Concentrations come from a two-compartment temsirolimus model with the
typical values derived from the Torisel label (CL 16.2 L/h from the label; V1 35 L, Q 8.7 L/h,
V2 137 L solved to reproduce the label Cmax of 585 ng/mL after 25 mg over 30 min), with 15% log-normal between-subject variability on CL and V1 and 10%
proportional noise. Run: ``python datasets/examples/make_two_studies.py``.
"""

from pathlib import Path

import numpy as np
from scipy.linalg import expm

CL, V1, Q, V2 = 16.2, 35.0, 8.7, 137.0  # L/h, L, L/h, L (literature file §1, §6)
LLOQ = 0.5  # ng/mL, an assumed assay limit


def conc(times, doses, cl, v1):
    """Whole-blood concentration (ng/mL) for infusions [(t0, amt_mg, dur_h)], exact by expm."""
    k = np.array([[-(cl + Q) / v1, Q / V2], [Q / v1, -Q / V2]])
    out = []
    for t in times:
        a = np.zeros(2)
        for t0, amt, dur in doses:
            if t <= t0:
                continue
            rate = np.array([amt / dur, 0.0])
            on = min(t - t0, dur)
            # infusion phase: a(on) = K^-1 (e^{K on} - I) rate; then free decay
            a_inf = np.linalg.solve(k, (expm(k * on) - np.eye(2)) @ rate)
            a += expm(k * (t - t0 - on)) @ a_inf
        out.append(a[0] / v1 * 1000.0)  # mg/L -> ng/mL
    return np.array(out)


def main():
    rng = np.random.default_rng(20261125)
    rows = ["C,ID,STUDY,TIME,EVID,AMT,AMTU,DUR,II,ADDL,CMT,DVID,DV,MDV,LLOQ,BLQ,BSA,WT,SEX"]
    rows.append("C this file is synthetic: see make_two_studies.py")
    sid = 100
    # Study PH1: weekly mg/m2 escalation, rich sampling after dose 1.
    for dose_m2 in (15.0, 45.0, 75.0):
        sid += 1
        bsa = round(rng.normal(1.85, 0.15), 2)
        wt = round(70 * (bsa / 1.85) ** 2, 1)
        sex = int(rng.integers(0, 2))
        cl, v1 = CL * np.exp(rng.normal(0, 0.15)), V1 * np.exp(rng.normal(0, 0.15))
        amt = dose_m2 * bsa
        rows.append(f".,{sid},PH1,0,1,{dose_m2},mg/m2,0.5,168,1,1,.,.,1,.,0,{bsa},{wt},{sex}")
        times = [0.5, 1, 2, 4, 8, 24, 48, 96, 168]
        c = conc(times, [(0, amt, 0.5), (168, amt, 0.5)], cl, v1)
        for t, ci in zip(times, c, strict=True):
            dv = ci * np.exp(rng.normal(0, 0.1))
            # Below the assay limit the lab reports no value, only the flag (censored, M3).
            dv_s, blq = (f"{dv:.4g}", 0) if dv >= LLOQ else (".", 1)
            rows.append(f".,{sid},PH1,{t},0,0,.,0,0,0,1,1,{dv_s},0,{LLOQ},{blq},{bsa},{wt},{sex}")
    # Study PH2: 25 mg flat weekly x4, sparse sampling around dose 4.
    for _ in range(3):
        sid += 1
        bsa = round(rng.normal(1.9, 0.15), 2)
        wt = round(72 * (bsa / 1.9) ** 2, 1)
        sex = int(rng.integers(0, 2))
        cl, v1 = CL * np.exp(rng.normal(0, 0.15)), V1 * np.exp(rng.normal(0, 0.15))
        rows.append(f".,{sid},PH2,0,1,25,mg,0.5,168,3,1,.,.,1,.,0,{bsa},{wt},{sex}")
        times = [504.5, 528, 672]
        c = conc(times, [(168 * k, 25.0, 0.5) for k in range(4)], cl, v1)
        for t, ci in zip(times, c, strict=True):
            dv = ci * np.exp(rng.normal(0, 0.1))
            rows.append(f".,{sid},PH2,{t},0,0,.,0,0,0,1,1,{dv:.4g},0,{LLOQ},0,{bsa},{wt},{sex}")
    text = "\n".join(rows) + "\n"
    Path(__file__).with_name("two_studies.csv").write_text(text)


if __name__ == "__main__":
    main()
