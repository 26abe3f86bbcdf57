"""The flagship temsirolimus model: label PK, the coupled system vs scipy, PD properties."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

import pkpd
from pkpd.models.temsirolimus import LABEL_25MG, MW_SIR, MW_TEM, TYPICAL, TemsirolimusModel

MODEL = TemsirolimusModel(rtol=1e-9, atol=1e-9)
predict = jax.jit(MODEL.predict)


def subject_for(doses, times):
    """One subject: doses [(time_h, amt_mg, dur_h)], prediction points at ``times``."""
    rows = [dict(ID=1, TIME=t, EVID=1, AMT=a, DUR=d) for t, a, d in doses]
    rows += [dict(ID=1, TIME=t, EVID=0, AMT=0.0, DUR=0.0) for t in times]
    df = pd.DataFrame(rows).sort_values("TIME", kind="stable")
    pad = pkpd.read_dataset(df).to_arrays()
    return jax.tree.map(lambda x: jnp.asarray(x[0]), pad.data)


def scipy_reference(p, doses, times):
    """The full coupled ODE (PK + effect compartment + VEGF + PD-1) by solve_ivp, rtol 1e-10.

    DOP853 (explicit): the system is not stiff at these parameters; it agrees with Radau to
    5e-10 relative on the twelve-week case at a fiftieth of the time (0.1 s vs 5 s)."""
    k10, k12, k21 = p["cl"] / p["v1"], p["q"] / p["v1"], p["q"] / p["v2"]
    ks = p["cl_sir"] / p["v_sir"]
    kout_v = 1 / p["vegf_mrt"]
    kin_v = p["vegf_base"] * kout_v
    kin_p = p["pd1_kout"] * p["pd1_base"] / (100 - p["pd1_base"])

    def rhs(t, y, rate):
        a1, a2, a_s, ce, r, pp = y
        c_drv = 1e6 * a1 / p["v1"] / MW_TEM + p["potency"] * 1e6 * a_s / p["v_sir"] / MW_SIR
        iv = p["vegf_imax"] * c_drv / (p["vegf_ic50"] + c_drv)
        ip = p["pd1_imax"] * c_drv / (p["pd1_ic50"] + c_drv)
        return [
            rate - (k10 + k12) * a1 + k21 * a2,
            k12 * a1 - k21 * a2,
            p["fm"] * k10 * a1 * MW_SIR / MW_TEM - ks * a_s,
            p["s6k_ke0"] * (c_drv - ce),
            kin_v * (1 - iv) - kout_v * r,
            kin_p * (1 - ip) * (100 - pp) - p["pd1_kout"] * pp,
        ]

    def rate_at(t):
        return sum(a / d for t0, a, d in doses if t0 <= t < t0 + d)

    cuts = sorted({0.0, *[t0 for t0, _, _ in doses], *[t0 + d for t0, _, d in doses], max(times)})
    y = np.array([0, 0, 0, 0, p["vegf_base"], p["pd1_base"]], dtype=float)
    out = np.empty((len(times), 6))
    times = np.asarray(times)
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        inside = (times > lo) & (times <= hi)
        # one solve gives the points inside and the state at the interval's end
        t_eval = np.unique(np.append(times[inside], hi))  # sorted, hi last
        sol = solve_ivp(rhs, (lo, hi), y, method="DOP853", rtol=1e-10, atol=1e-13,
                        t_eval=t_eval, args=(rate_at(lo),))  # fmt: skip
        out[inside] = sol.y[:, np.searchsorted(t_eval, times[inside])].T
        y = sol.y[:, -1]
    out[times == 0] = [0, 0, 0, 0, p["vegf_base"], p["pd1_base"]]
    ce = out[:, 3]
    frac = ce ** p["s6k_hill"] / (p["s6k_ic50"] ** p["s6k_hill"] + ce ** p["s6k_hill"])
    return {
        "temsirolimus": 1000 * out[:, 0] / p["v1"],
        "sirolimus": 1000 * out[:, 2] / p["v_sir"],
        "s6k": 100 * (1 - p["s6k_imax"] * frac),
        "vegf": out[:, 4],
        "pd1_cd8": out[:, 5],
    }


def test_label_pk_of_a_single_25_mg_infusion():
    # Torisel PI §12.3 / CCO monograph (literature file §1): Cmax 585 ng/mL, AUC 1627 ng.h/mL,
    # t1/2 17.3 h (temsirolimus), 54.6 h (sirolimus), AUC ratio sir/tem 2.7.
    times = np.concatenate([np.linspace(0.01, 0.5, 50), np.geomspace(0.51, 4000, 3000)])
    out = predict(TYPICAL, subject_for([(0.0, 25.0, 0.5)], times))
    c, cs = np.asarray(out["temsirolimus"]), np.asarray(out["sirolimus"])
    assert c.max() == pytest.approx(LABEL_25MG["tem_cmax_ng_ml"], rel=0.10)
    assert times[c.argmax()] == pytest.approx(0.5, abs=0.05)  # Tmax at the end of infusion
    auc = np.trapezoid(np.r_[0, c], np.r_[0, times])
    auc_sir = np.trapezoid(np.r_[0, cs], np.r_[0, times])
    assert auc == pytest.approx(LABEL_25MG["tem_auc_ng_h_ml"], rel=0.10)
    assert auc == pytest.approx(25.0 / TYPICAL["cl"] * 1000, rel=1e-3)  # dose / CL
    late = (times > 100) & (times < 300)
    t_half = np.log(2) / -np.polyfit(times[late], np.log(c[late]), 1)[0]
    late_s = times > 500
    t_half_s = np.log(2) / -np.polyfit(times[late_s], np.log(cs[late_s]), 1)[0]
    assert t_half == pytest.approx(LABEL_25MG["tem_t_half_h"], rel=0.05)
    assert t_half_s == pytest.approx(LABEL_25MG["sir_t_half_h"], rel=0.05)
    assert auc_sir / auc == pytest.approx(LABEL_25MG["auc_ratio_sir_tem"], rel=0.10)


DOSES = [(0.0, 25.0, 0.5), (168.0, 175.0, 1.0), (336.0, 75.0, 0.5)]
TIMES = np.array(
    [0.0, 0.25, 0.5, 1, 2, 6, 24, 72, 168, 168.5, 169, 170, 200, 336.25, 340, 400, 504, 700]
)


def test_coupled_system_matches_scipy():
    out = predict(TYPICAL, subject_for(DOSES, TIMES))
    assert bool(out["ok"])
    ref = scipy_reference(TYPICAL, DOSES, TIMES)
    for e, want in ref.items():
        got = np.asarray(out[e])
        big = np.abs(want) > 1e-6 * np.abs(want).max()
        rel = np.abs(got[big] - want[big]) / np.abs(want[big])
        # closed forms for PK and the effect compartment; VEGF and PD-1 come from the fixed
        # grid (pkpd.pd.forced), whose bound at typical values is 1e-5 (measured 1.9e-6 and
        # 8.9e-7 here): enough for the likelihood (benchmarks/RESULTS.md, 2026-12-03)
        tol = 1e-5 if e in ("vegf", "pd1_cd8") else 1e-6
        assert rel.max() <= tol, (e, rel.max())
        assert np.all(np.abs(got[~big]) <= 1e-6 * np.abs(want).max() + 1e-12)


def test_no_drug_keeps_every_endpoint_at_baseline():
    out = predict(TYPICAL, subject_for([(0.0, 1e-300, 0.5)], [1.0, 50.0, 500.0]))
    np.testing.assert_allclose(out["temsirolimus"], 0.0, atol=1e-200)
    np.testing.assert_allclose(out["s6k"], 100.0, rtol=1e-12)
    np.testing.assert_allclose(out["vegf"], TYPICAL["vegf_base"], rtol=1e-9)
    np.testing.assert_allclose(out["pd1_cd8"], TYPICAL["pd1_base"], rtol=1e-9)


def test_inhibition_is_monotone_in_dose():
    s6k, vegf, pd1 = [], [], []
    for dose in (1.0, 5.0, 25.0, 75.0, 250.0):
        out = predict(TYPICAL, subject_for([(0.0, dose, 0.5)], [24.0, 168.0]))
        s6k.append(float(out["s6k"][1]))
        vegf.append(float(out["vegf"][1]))
        pd1.append(float(out["pd1_cd8"][1]))
    for series in (s6k, vegf, pd1):
        assert np.all(np.diff(series) < 0), series


def test_pd1_stays_inside_0_100_for_extreme_parameters():
    p = dict(TYPICAL, pd1_imax=1.0 - 1e-12, pd1_ic50=1e-6, pd1_kout=5.0, pd1_base=99.0)
    sub = subject_for([(0.0, 1e5, 0.5)], np.linspace(0.1, 300, 50))
    out = jax.jit(TemsirolimusModel(rtol=1e-9, atol=1e-9, pd_solver="diffrax").predict)(p, sub)
    v = np.asarray(out["pd1_cd8"])
    assert bool(out["ok"]) and np.all((v > 0) & (v < 100))
    # the fixed grid's exponential step is stable at any step length: a 5/h turnover (a
    # thousand times PD-1's, with near-total inhibition switching on within seconds) stays
    # inside (0, 100) and within 5% of the adaptive solve (the grid is not built for it)
    grid = jax.jit(TemsirolimusModel().predict)(p, sub)
    g = np.asarray(grid["pd1_cd8"])
    assert bool(grid["ok"]) and np.all((g > 0) & (g < 100))
    np.testing.assert_allclose(g, v, rtol=0.05)


TWELVE_WEEKS = [(168.0 * k, 25.0 if k < 3 else 75.0, 0.5) for k in range(12)]
TWELVE_WEEK_TIMES = np.array(
    [3.0, 30.0, 170.0, 500.0, 1000.0, 1345.0, 1500.0, 2000.0, 2017.5, 2100.0]
)


@pytest.mark.parametrize("solver", ["grid", "grid-infusions", "diffrax"])
def test_pd_solvers_match_scipy_over_twelve_weekly_doses(solver):
    ref = scipy_reference(TYPICAL, TWELVE_WEEKS, TWELVE_WEEK_TIMES)
    # grid-infusions: the driver by the exact recurrence a fit uses on infusion-only data
    kinds = (1,) if solver == "grid-infusions" else None
    m = TemsirolimusModel(rtol=1e-9, atol=1e-9, pd_solver=solver.split("-")[0], dose_kinds=kinds)
    out = jax.jit(m.predict)(TYPICAL, subject_for(TWELVE_WEEKS, TWELVE_WEEK_TIMES))
    assert bool(out["ok"])
    # the grid: measured 6.0e-6 (VEGF) and 2.4e-6 (PD-1), both at 2100 h
    for e in ("vegf", "pd1_cd8"):
        rel = np.abs(np.asarray(out[e]) - ref[e]) / np.abs(ref[e])
        assert rel.max() <= 1e-5, (e, rel.max())


# Corners of the PD priors (priors/temsirolimus.toml): fast VEGF and PD-1 turnover with deep
# inhibition, potencies far above and far below the concentrations reached.
EXTREMES = {
    "fast turnover": dict(vegf_mrt=20.0, vegf_imax=0.6, pd1_kout=0.03, pd1_imax=0.6),
    "high IC50": dict(vegf_ic50=40.0, pd1_ic50=40.0, vegf_mrt=30.0, vegf_imax=0.6,
                      pd1_imax=0.6, pd1_kout=0.02),
    "low IC50": dict(vegf_ic50=0.05, pd1_ic50=0.05, vegf_imax=0.6),
}  # fmt: skip


predict_infusions = jax.jit(TemsirolimusModel(dose_kinds=(1,)).predict)  # one compile for all


@pytest.mark.parametrize("case", list(EXTREMES))
def test_grid_solver_at_the_priors_extremes(case):
    # measured at most 1.25e-4 (VEGF, high IC50; 1.22e-4 fast turnover, 2.7e-6 low IC50); the
    # old RK4 step on a grid twice as dense was 8e-4 off in the first case
    p = dict(TYPICAL, **EXTREMES[case])
    ref = scipy_reference(p, TWELVE_WEEKS, TWELVE_WEEK_TIMES)
    out = predict_infusions(p, subject_for(TWELVE_WEEKS, TWELVE_WEEK_TIMES))
    assert bool(out["ok"])
    for e in ("vegf", "pd1_cd8"):
        rel = np.abs(np.asarray(out[e]) - ref[e]) / np.abs(ref[e])
        assert rel.max() <= 3e-4, (e, rel.max())


def test_effect_compartment_with_fast_ke0_equals_the_direct_model():
    p = dict(TYPICAL, s6k_ke0=1e5, s6k_hill=1.7)
    times = np.array([1.0, 5.0, 30.0, 100.0])
    s = subject_for([(0.0, 25.0, 0.5)], times)
    out = predict(p, s)
    drv = (
        1e3 * np.asarray(out["temsirolimus"]) / MW_TEM + 1e3 * np.asarray(out["sirolimus"]) / MW_SIR
    )
    h = p["s6k_hill"]
    direct = 100 * (1 - p["s6k_imax"] * drv**h / (p["s6k_ic50"] ** h + drv**h))
    np.testing.assert_allclose(out["s6k"], direct, rtol=1e-4)


def test_typical_subject_reproduces_the_qualitative_anchors():
    # 25 mg weekly over 30 min for 8 weeks (the label regimen).
    doses = [(168.0 * k, 25.0, 0.5) for k in range(8)]
    times = np.array([167.9, 7 * 168.0 - 0.1, 8 * 168.0 - 0.1])
    out = predict(TYPICAL, subject_for(doses, times))
    # PD-1+ of CD8+ drifts from 16.8% towards 12.7% over weeks (Kobayashi 2020, via the brief):
    # within 1 percentage point of 12.7% at week 8.
    assert float(out["pd1_cd8"][-1]) == pytest.approx(12.7, abs=1.0)
    # S6K stays inhibited at trough a week after each dose (everolimus analogue, O'Donnell 2008):
    # more than 50% inhibition before the next dose.
    assert np.all(np.asarray(out["s6k"]) < 50.0)
    # VEGF falls (inhibition of HIF-driven production), but stays positive.
    assert 0 < float(out["vegf"][-1]) < TYPICAL["vegf_base"]


def test_endpoint_switch_pays_only_for_what_is_asked():
    pk_only = TemsirolimusModel(endpoints=("temsirolimus",))
    assert set(pk_only.parameters) == {"cl", "v1", "q", "v2"}
    s = subject_for(DOSES, TIMES)
    a = pk_only.predict({k: TYPICAL[k] for k in pk_only.parameters}, s)
    b = predict(TYPICAL, s)
    np.testing.assert_allclose(a["temsirolimus"], b["temsirolimus"], rtol=1e-14)
    assert set(a) == {"temsirolimus", "ok"}


def test_grad_vmap_and_jit_agree():
    s = subject_for(DOSES, TIMES)
    pk = TemsirolimusModel(endpoints=("temsirolimus", "sirolimus", "s6k"))

    def loss(cl):
        out = pk.predict(dict(TYPICAL, cl=cl), s)
        return jnp.sum(jnp.log1p(out["sirolimus"])) + jnp.sum(out["s6k"]) / 100

    # compiled (op by op, every primitive compiles on its own: 30 s)
    g = jax.jit(jax.grad(loss))(16.2)
    value = jax.jit(loss)
    fd = (value(16.2 * (1 + 1e-6)) - value(16.2 * (1 - 1e-6))) / (2 * 16.2e-6)
    assert np.isfinite(float(g)) and float(g) == pytest.approx(float(fd), rel=1e-5)
    batch = jax.tree.map(lambda x: jnp.stack([x, x]), s)
    params = {k: jnp.array([v, v * 1.1]) for k, v in TYPICAL.items() if k in pk.parameters}
    vm = jax.jit(jax.vmap(pk.predict))(params, batch)
    one = jax.jit(pk.predict)({k: v[1] for k, v in params.items()}, s)
    np.testing.assert_allclose(vm["sirolimus"][1], one["sirolimus"], rtol=1e-12)


def test_the_joint_model_from_blocks_matches_scipy_and_declares_the_same_parameters():
    """The whole temsirolimus model from blocks (closed-form PK and effect site on one pole
    set, VEGF and PD-1 on the dose-aware grid) against the scipy reference of the coupled
    system, through three doses of 25, 175 and 75 mg."""
    from pkpd.models.temsirolimus import from_blocks

    m = from_blocks()
    assert m.engine == "grid"
    assert set(m.structural_parameters) == set(TYPICAL) == set(MODEL.structural_parameters)
    assert m.endpoint_units == {e: MODEL.endpoint_units[e] for e in m.endpoint_units}
    assert m.parameters["s6k_ic50"] == "nM" and m.parameters["potency"] == "1"
    assert m.endpoint_codes == MODEL.endpoint_codes
    # what a fit reads from the model: the same subject grouping and IC50 level
    assert set(m.costly_endpoints) == set(MODEL.costly_endpoints)
    assert m.hill_levels == MODEL.hill_levels
    out = jax.jit(m.predict)(TYPICAL, subject_for(DOSES, TIMES))
    assert bool(out["ok"])
    ref = scipy_reference(TYPICAL, DOSES, TIMES)
    for e, want in ref.items():
        got = np.asarray(out[e])[: len(TIMES)]
        big = np.abs(want) > 1e-6 * np.abs(want).max()
        rel = np.abs(got[big] - want[big]) / np.abs(want[big])
        assert rel.max() <= (1e-5 if e in ("vegf", "pd1_cd8") else 1e-6), (e, rel.max())
