"""Generate the bundled SYNTHETIC multi-study temsirolimus dataset from a stored truth.

These are not trial data. Individual patient data from the temsirolimus trials are not public;
this file simulates studies shaped like the published designs (literature file §3) with pkpd's
own joint model (pkpd.models.temsirolimus) and documented parameter values. Run from the
repository root::

    .venv/bin/python datasets/temsirolimus/generate.py [OUT_DIR]

It rewrites (in this folder, or OUT_DIR), byte for byte (fixed seed, fixed number formatting):

* ``temsirolimus.csv``: the full dataset (NONMEM-style; dictionary in datasets/README.md);
* ``temsirolimus_small.csv``: a subset of a few subjects per study, for quick tests and the demo;
* ``truth.json``: population values, covariate effects, variabilities, residual errors and the
  study random effects used;
* ``truth_subjects.csv``: every subject's covariates, random effects and individual parameters;
* ``ph2_arm_summaries.csv``: study PH2's dose arms as a publication would summarise them
  (:func:`arm_summaries`), for fits of published summaries next to individual data.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

import pkpd
from pkpd.models.temsirolimus import (
    COVARIATE_EFFECTS,
    TYPICAL,
    TemsirolimusModel,
    covariate_log_multiplier,
)

HERE = Path(__file__).resolve().parent
SEED = 20261125
WEEK = 168.0

# Truth. Typical values: pkpd.models.temsirolimus.TYPICAL (each with its literature source).
# Covariate effects: pkpd.models.temsirolimus.COVARIATE_EFFECTS, the medians of
# priors/temsirolimus.toml [covariates.*] (sources there).
EFFECTS = COVARIATE_EFFECTS
# Between-subject SDs (log scale; logit scale for pd1_base). Literature anchors where they
# exist (AUC CV 26% → cl; Cmax CV 14% → v1; Wu 2012 IIV CL 52% → cl_sir; Hansson 2013 VEGF
# baseline ω² 0.252 and MRT ω² 0.060); the others are assumptions.
OMEGA = {
    "cl": 0.25,
    "v1": 0.15,
    "v2": 0.25,
    "cl_sir": 0.40,
    "v_sir": 0.25,
    "s6k_ic50": 0.40,
    "vegf_base": 0.50,
    "vegf_mrt": 0.25,
    "pd1_base": 0.40,
}
# Inter-occasion SD of clearance (log scale; assumption: about 15%, below its between-subject
# SD, as occasion effects usually are). Occasions are the sampled cycles: a new one starts at
# the dose of each week with PK samples after the first (PH1: weeks 1-3 | 4; PH2: weeks 1-3 |
# 4-7 | 8); PH3 samples one week and IMMUNO has no PK, so each of their subjects has one.
OMEGA_IOV = {"cl": 0.15}
OCCASION_STARTS = {"PH1": (3 * 168.0,), "PH2": (3 * 168.0, 7 * 168.0), "PH3": (), "IMMUNO": ()}
# Between-study SDs (assumptions: moderate study-to-study differences).
OMEGA_STUDY = {"cl": 0.10, "cl_sir": 0.15, "vegf_base": 0.20, "pd1_base": 0.15}
LOGIT = {"pd1_base"}
MAX_OCC = 1 + max(len(v) for v in OCCASION_STARTS.values())
# Residual errors (assumptions within the ranges of priors/temsirolimus.toml [residual.*]).
RESIDUAL = {
    "temsirolimus": ("combined", {"proportional": 0.15, "additive": 0.3}),
    "sirolimus": ("combined", {"proportional": 0.15, "additive": 0.3}),
    "s6k": ("lognormal", {"sd_log": 0.20}),
    "vegf": ("lognormal", {"sd_log": 0.35}),
    "pd1_cd8": ("logit", {"sd_logit": 0.20}),
}
# Assay limits (assumptions: typical LC-MS/MS whole-blood and ELISA limits).
LLOQ = {"temsirolimus": 0.5, "sirolimus": 0.5, "vegf": 9.0}
DVID = {"temsirolimus": 1, "sirolimus": 2, "s6k": 3, "vegf": 4, "pd1_cd8": 5}


def covariates(rng, n):
    bsa = np.clip(rng.normal(1.85, 0.2, n), 1.35, 2.5)
    height = np.clip(rng.normal(170, 9, n), 148, 200)
    wt = bsa**2 * 3600 / height  # Mosteller: BSA = sqrt(height_cm * weight_kg / 3600)
    age = np.clip(rng.normal(60, 10, n), 25, 85)
    sex = rng.integers(0, 2, n)
    hct = np.clip(rng.normal(36, 4, n), 24, 50)
    comed = rng.choice(3, size=n, p=[0.9, 0.05, 0.05])
    return pd.DataFrame(
        {
            "BSA": np.round(bsa, 2),
            "WT": np.round(wt, 1),
            "AGE": np.round(age).astype(int),
            "SEX": sex,
            "HCT": np.round(hct, 1),
            "CYP3A4_INH": (comed == 1).astype(int),
            "CYP3A4_IND": (comed == 2).astype(int),
        }
    )


def design(rng):
    """Per subject: (study, doses [(t, amt, unit)], samples [(t, endpoint)])."""
    subjects = []
    # Phase I weekly dose escalation 7.5-220 mg/m2 (Raymond 2004 as described in the brief):
    # rich PK of both analytes after dose 1 and dose 4, S6K in PBMCs.
    rich1 = [0.25, 0.5, 1, 2, 4, 8, 24, 48, 72, 167.9]
    rich4 = [3 * WEEK + t for t in [0.25, 0.5, 1, 2, 4, 8, 24, 48, 72, 167.9]]
    s6k_t = [0, 4, 24, 72, 167.9, 3 * WEEK + 4, 3 * WEEK + 72, 4 * WEEK - 0.1]
    for level in (7.5, 15, 34, 45, 75, 110, 165, 220):
        for _ in range(3):
            samples = [(t, e) for t in rich1 + rich4 for e in ("temsirolimus", "sirolimus")]
            samples += [(t, "s6k") for t in s6k_t]
            subjects.append(("PH1", [(WEEK * k, level, "mg/m2") for k in range(4)], samples))
    # Phase II RCC randomised 25/75/250 mg weekly (Atkins 2004; Boni 2005 popPK substudy):
    # sparse PK of both analytes (4-6 samples each), VEGF at baseline and weeks 2, 4, 8.
    pool = [0.5, 1, 3, 24, 72, 167.9, 3 * WEEK + 0.5, 3 * WEEK + 24, 4 * WEEK - 0.1, 7 * WEEK + 1]
    for arm in (25.0, 75.0, 250.0):
        for _ in range(37):
            n = int(rng.integers(4, 7))
            ts = sorted(rng.choice(pool, size=n, replace=False))
            samples = [(t, e) for t in ts for e in ("temsirolimus", "sirolimus")]
            samples += [(t, "vegf") for t in (0.0, 2 * WEEK - 0.1, 4 * WEEK - 0.1, 8 * WEEK - 0.1)]
            subjects.append(("PH2", [(WEEK * k, arm, "mg") for k in range(8)], samples))
    # Phase III-like 25 mg weekly (ARCC, Hudes 2007): 2-3 PK samples each.
    for _ in range(200):
        n = int(rng.integers(2, 4))
        week = int(rng.integers(0, 12))
        ts = sorted(
            week * WEEK + rng.choice([0.5, 1, 2, 6, 24, 48, 96, 167.9], size=n, replace=False)
        )
        samples = [(float(t), e) for t in ts for e in ("temsirolimus", "sirolimus")]
        subjects.append(("PH3", [(WEEK * k, 25.0, "mg") for k in range(13)], samples))
    # Immunology cohort, 25 mg weekly (Kobayashi 2020 design as in the brief): PD-1+ % of CD8+
    # and VEGF at baseline and weeks 2, 4, 8.
    for _ in range(30):
        ts = (0.0, 2 * WEEK - 0.1, 4 * WEEK - 0.1, 8 * WEEK - 0.1)
        samples = [(t, e) for t in ts for e in ("pd1_cd8", "vegf")]
        subjects.append(("IMMUNO", [(WEEK * k, 25.0, "mg") for k in range(8)], samples))
    return subjects


def individual(rng, cov, study_eta, study):
    eta = {p: rng.normal(0, w) for p, w in OMEGA.items()}
    theta = {}
    for p, v in TYPICAL.items():
        z = np.log(v) if p not in LOGIT else np.log(v / (100 - v))
        z += eta.get(p, 0.0) + study_eta[study].get(p, 0.0)
        z += float(covariate_log_multiplier(p, cov.to_dict()))
        theta[p] = float(np.exp(z)) if p not in LOGIT else float(100 / (1 + np.exp(-z)))
    return eta, theta


def occasion(study, t):
    """The occasion (1, 2, ...) of a record at time ``t`` (h) in ``study``."""
    return 1 + sum(t >= b for b in OCCASION_STARTS[study])


def main(out: Path = HERE):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    studies = ["PH1", "PH2", "PH3", "IMMUNO"]
    study_eta = {s: {p: float(rng.normal(0, w)) for p, w in OMEGA_STUDY.items()} for s in studies}
    subjects = design(rng)
    cov = covariates(rng, len(subjects))
    # occasion effects from their own stream, so every other draw is what it was without them
    rng_iov = np.random.default_rng([SEED, 2])
    rows, truth_rows, thetas, kappas = [], [], [], []
    for i, (study, doses, samples) in enumerate(subjects):
        sid = 1001 + i
        c = cov.iloc[i]
        eta, theta = individual(rng, c, study_eta, study)
        thetas.append(theta)
        n_occ = 1 + len(OCCASION_STARTS[study])
        kappa = {p: rng_iov.normal(0, w, n_occ) for p, w in OMEGA_IOV.items()}
        kappas.append(kappa)
        truth_rows.append(
            {
                "ID": sid,
                "STUDY": study,
                **c.to_dict(),
                **{f"eta_{k}": v for k, v in eta.items()},
                **theta,
                **{
                    f"kappa_{p}_{k + 1}": (float(v[k]) if k < n_occ else np.nan)
                    for p, v in kappa.items()
                    for k in range(MAX_OCC)
                },
            }
        )
        recs = [
            dict(TIME=t, EVID=1, AMT=amt, AMTU=unit, DUR=0.5, DVID=".") for t, amt, unit in doses
        ]
        recs += [
            dict(TIME=float(t), EVID=0, AMT=0, AMTU=".", DUR=0, DVID=DVID[e]) for t, e in samples
        ]
        for r in sorted(recs, key=lambda r: (r["TIME"], -r["EVID"])):
            occ = occasion(study, r["TIME"])
            rows.append({"ID": sid, "STUDY": study, **r, "OCC": occ, **c.to_dict()})
    data = pd.DataFrame(rows)
    # One batched prediction for every subject (pkpd's own model, all endpoints).
    design_only = data.assign(DV=".", MDV=1)
    pad = pkpd.read_dataset(design_only).to_arrays(prediction_rows="all")
    params = {p: jnp.asarray([th[p] for th in thetas]) for p in TYPICAL}
    # clearance per occasion: θ·exp(κ) (padded occasions repeat the last; no record uses them)
    for p in OMEGA_IOV:
        k = np.array([np.pad(kp[p], (0, MAX_OCC - len(kp[p])), mode="edge") for kp in kappas])
        params[p] = params[p][:, None] * jnp.exp(jnp.asarray(k))
    # tight adaptive solve: the data should not carry solver error
    model = TemsirolimusModel(rtol=1e-10, atol=1e-10, pd_solver="diffrax")
    pred = jax.jit(jax.vmap(model.predict))(params, jax.tree.map(jnp.asarray, pad.data))
    assert bool(jnp.all(pred["ok"])), "an ODE solve failed while simulating"
    f_row = {}
    for e, code in DVID.items():
        values = np.full(len(data), np.nan)
        rows_idx = np.asarray(pad.data.point_row)
        valid = np.asarray(pad.data.point_valid)
        values[rows_idx[valid]] = np.asarray(pred[e])[valid]
        f_row[code] = values
    inv = {v: k for k, v in DVID.items()}
    dv, mdv, lloq_col, blq_col = [], [], [], []
    for k, r in data.iterrows():
        if r["EVID"] == 1:
            dv.append(".")
            mdv.append(1)
            lloq_col.append(".")
            blq_col.append(0)
            continue
        e = inv[int(r["DVID"])]
        f = float(f_row[int(r["DVID"])][k])
        kind, sd = RESIDUAL[e]
        z = rng.normal()
        if kind == "combined":
            y = f + z * np.sqrt(sd["additive"] ** 2 + (sd["proportional"] * f) ** 2)
        elif kind == "lognormal":
            y = f * np.exp(sd["sd_log"] * z)
        else:
            lg = np.log(f / (100 - f)) + sd["sd_logit"] * z
            y = 100 / (1 + np.exp(-lg))
        lloq = LLOQ.get(e)
        lloq_col.append(lloq if lloq is not None else ".")
        if rng.random() < 0.01:  # a sample lost in the lab: the record stays, DV missing, MDV=1
            dv.append(".")
            mdv.append(1)
            blq_col.append(0)
        elif lloq is not None and y < lloq:  # below the assay limit: censored (M3)
            dv.append(".")
            mdv.append(0)
            blq_col.append(1)
        else:
            dv.append(f"{y:.5g}")
            mdv.append(0)
            blq_col.append(0)
    data["DV"], data["MDV"], data["LLOQ"], data["BLQ"] = dv, mdv, lloq_col, blq_col
    # A few covariate cells missing on later records (the reader fills them within subject).
    later = data.index[data.duplicated("ID")]
    for col in ("HCT", "WT"):
        data.loc[rng.choice(later, size=15, replace=False), col] = np.nan
    data = data.astype({"AGE": "Int64"})
    cols = ["ID", "STUDY", "OCC", "TIME", "EVID", "AMT", "AMTU", "DUR", "DVID", "DV", "MDV", "LLOQ", "BLQ",
            "BSA", "WT", "AGE", "SEX", "HCT", "CYP3A4_INH", "CYP3A4_IND"]  # fmt: skip
    data = data[cols]
    header = "# SYNTHETIC data simulated by datasets/temsirolimus/generate.py - not trial data\n"
    write = lambda frame: header + frame.to_csv(index=False, na_rep=".", float_format="%.6g")  # noqa: E731
    (out / "temsirolimus.csv").write_text(write(data))
    small_ids = []
    for s, n in (("PH1", 8), ("PH2", 12), ("PH3", 12), ("IMMUNO", 8)):
        ids = data.loc[data.STUDY == s, "ID"].unique()
        small_ids += list(ids[:: max(1, len(ids) // n)][:n])
    (out / "temsirolimus_small.csv").write_text(write(data[data.ID.isin(small_ids)]))
    truth = {
        "note": "Truth of the SYNTHETIC temsirolimus dataset (datasets/temsirolimus/generate.py)",
        "seed": SEED,
        "typical": TYPICAL,
        "covariate_effects": {
            k: {"parameter": p, "covariate": c, "form": f, "reference": r, "value": v}
            for k, (p, c, f, r, v) in EFFECTS.items()
        },  # fmt: skip
        "omega": OMEGA,
        "omega_study": OMEGA_STUDY,
        "omega_iov": OMEGA_IOV,
        "occasion_starts_h": {k: list(v) for k, v in OCCASION_STARTS.items()},
        "study_eta": study_eta,
        "residual": {k: {"model": m, **v} for k, (m, v) in RESIDUAL.items()},
        "lloq": LLOQ,
        "dvid": DVID,
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2, sort_keys=True) + "\n")
    pd.DataFrame(truth_rows).to_csv(out / "truth_subjects.csv", index=False, float_format="%.6g")
    (out / "ph2_arm_summaries.csv").write_text(arm_summaries(data, thetas, kappas))


#: Dense grid of the first dosing interval (h) for the PH2 arm summaries: 0.01 h for a day
#: (the infusion's end and sirolimus's peak), 0.25 h after.
SUMMARY_GRID = np.unique(
    np.concatenate([np.arange(0, 2401) * 0.01, 24.0 + np.arange(0, 577) * 0.25])
)


def first_interval_exposures(data, thetas, kappas, study):
    """Per subject of ``study``: its first dose (mg) and the true Cmax (ng/mL) and AUC over
    0-168 h (ng*h/mL) of temsirolimus and sirolimus after the first dose, from its individual
    parameters (clearance of occasion 1), no assay error: what NCA of rich sampling after a
    first dose approximates. AUCs by the linear-up/log-down trapezoid on SUMMARY_GRID."""
    first = data[(data.STUDY == study) & (data.EVID == 1)].groupby("ID").head(1)
    idx = [int(i) - 1001 for i in first.ID]
    # one design subject per first dose: every subject of an arm has the same first dose
    doses = sorted(set(first.AMT))
    recs = []
    for j, (_, d) in enumerate(first.drop_duplicates("AMT").sort_values("AMT").iterrows()):
        base = {"ID": j + 1, "STUDY": study, "OCC": 1, "AMTU": ".", "DUR": 0.0, "EVID": 0, "AMT": 0}
        base |= {c: d[c] for c in ("BSA", "WT", "AGE", "SEX", "HCT", "CYP3A4_INH", "CYP3A4_IND")}
        recs.append(
            base | {"TIME": 0.0, "EVID": 1, "AMT": d.AMT, "AMTU": d.AMTU, "DUR": d.DUR, "DVID": "."}
        )
        recs += [base | {"TIME": float(t), "DVID": k} for t in SUMMARY_GRID for k in (1, 2)]
    design = pd.DataFrame(recs).assign(DV=".", MDV=1)
    pad = pkpd.read_dataset(design).to_arrays(prediction_rows="all")
    which = np.asarray([doses.index(a) for a in first.AMT])
    per_subject = jax.tree.map(lambda x: jnp.asarray(x)[which], pad.data)
    params = {p: jnp.asarray([thetas[i][p] for i in idx]) for p in TYPICAL}
    params["cl"] = params["cl"] * jnp.exp(jnp.asarray([kappas[i]["cl"][0] for i in idx]))
    model = TemsirolimusModel(endpoints=("temsirolimus", "sirolimus"))  # closed form
    pred = jax.jit(jax.vmap(model.predict))(params, per_subject)
    out = {"dose": first.AMT.to_numpy(float)}
    # each design subject's records in file order: TIME 0 dose, then (t, DVID 1), (t, DVID 2)
    point_row = np.asarray(per_subject.point_row)
    valid = np.asarray(per_subject.point_valid)
    dvid = design.DVID.to_numpy()
    for e in ("temsirolimus", "sirolimus"):
        c = np.stack(
            [
                np.asarray(pred[e])[i][valid[i] & (dvid[point_row[i]] == DVID[e])]
                for i in range(len(idx))
            ]
        )
        dt, c1, c2 = np.diff(SUMMARY_GRID), c[:, :-1], c[:, 1:]
        down = (c2 < c1) & (c2 > 0)
        log_piece = dt * (c1 - c2) / np.log(np.where(down, c1 / np.where(down, c2, 1.0), 2.0))
        out[f"cmax_{e}"] = c.max(axis=1)
        out[f"auc_{e}"] = np.where(down, log_piece, dt * (c1 + c2) / 2).sum(axis=1)
    return first.ID.to_numpy(), out


def arm_summaries(data, thetas, kappas) -> str:
    """PH2's three arms as a publication would give them (pkpd.data.aggregate format)."""
    ids, x = first_interval_exposures(data, thetas, kappas, "PH2")
    cov = data.groupby("ID").first().loc[ids]
    lines = [
        "# SYNTHETIC arm-level summaries of study PH2 of the bundled synthetic dataset - not trial",
        "# data. Written by datasets/temsirolimus/generate.py from the stored truth: each PH2",
        "# subject's true exposure after the first dose (its individual parameters, clearance of",
        "# occasion 1, no assay error), summarised per dose arm as a publication would (mean and SD",
        "# of Cmax, geometric mean and SD of log AUC over the first week, the sirolimus Cmax with",
        "# its CV). The arm covariates are the arm's medians (BSA, HCT) and no CYP3A4 co-medication",
        "# (the arms' few co-medicated subjects are in the summaries). Fit them in place of PH2's",
        "# individual records: pkpd.fit(..., aggregate=this file).",
        "STUDY,ARM,REGIMEN,N,ENDPOINT,METRIC,WINDOW,STATISTIC,VALUE,SPREAD,SPREAD_VALUE,UNIT,SOURCE,HORIZON_H,BSA,HCT,CYP3A4_INH,CYP3A4_IND",
    ]
    source = "synthetic: truth of the bundled PH2 subjects (generate.py)"
    for dose in sorted(set(x["dose"])):
        arm = x["dose"] == dose
        n = int(arm.sum())
        bsa, hct = np.median(cov.BSA[arm]), np.median(cov.HCT[arm])
        common = f"PH2,{dose:g} mg weekly,{dose:g} mg q1w x8 over 30 min,{n}"
        tail = f"{source},168,{bsa:.3g},{hct:.3g},0,0"
        cmax, auc = x["cmax_temsirolimus"][arm], np.log(x["auc_temsirolimus"][arm])
        cmax_s, auc_s = x["cmax_sirolimus"][arm], np.log(x["auc_sirolimus"][arm])
        lines += [
            f"{common},temsirolimus,cmax,c1,mean,{cmax.mean():.5g},sd,{cmax.std(ddof=1):.4g},ng/mL,{tail}",
            f"{common},temsirolimus,auc_tau,c1,geomean,{np.exp(auc.mean()):.5g},sd_log,{auc.std(ddof=1):.4g},ng*h/mL,{tail}",
            f"{common},sirolimus,cmax,c1,mean,{cmax_s.mean():.5g},cv,{100 * cmax_s.std(ddof=1) / cmax_s.mean():.4g},ng/mL,{tail}",
            f"{common},sirolimus,auc_tau,c1,geomean,{np.exp(auc_s.mean()):.5g},sd_log,{auc_s.std(ddof=1):.4g},ng*h/mL,{tail}",
        ]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
