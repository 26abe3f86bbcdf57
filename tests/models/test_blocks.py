"""Models composed from blocks (issue 20, item 1): :mod:`pkpd.models.blocks`.

Each PK option and each PD block is predicted through a dose history (boluses, an infusion, a
second dose) and compared with scipy's ``solve_ivp`` (Radau, rtol 1e-11) of the same equations
written out by hand here, ≤ 1e-6 relative; then the definition checks, the default priors and
a model file built from blocks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

import pkpd
from pkpd.models import blocks as B

OBS = [0.25, 0.75, 1.5, 3.0, 5.0, 9.0, 12.5, 13.0, 14.5, 18.0, 30.0, 48.0]
#: Doses of every case: (time h, amount mg, CMT, infusion duration h or 0 for a bolus).
DOSES = [(0.0, 100.0, 1, 0.0), (12.0, 60.0, 1, 2.0)]


def _frame(model, doses=DOSES, obs=OBS):
    codes = {e: c for c, e in (model.endpoint_codes or {}).items()}
    rows = [
        dict(ID=1, TIME=t, EVID=1, AMT=a, CMT=c, RATE=(a / d if d else 0.0), DVID=".", DV=".")
        for t, a, c, d in doses
    ]
    for t in obs:
        for e in model.endpoints:
            rows.append(
                dict(ID=1, TIME=t, EVID=0, AMT=0, CMT=0, RATE=0, DVID=codes.get(e, 1), DV=1.0)
            )
    return pd.DataFrame(rows).sort_values("TIME", kind="stable")


def _predict(model, params, doses=DOSES):
    padded = pkpd.read_dataset(_frame(model, doses), model=model).to_arrays()
    subject = jax.tree.map(lambda x: x[0], padded.data)
    out = jax.jit(model.predict)(params, subject)  # compiled: op by op is several times slower
    assert bool(out.get("ok", True))
    ep = np.asarray(subject.point_endpoint)[np.asarray(subject.point_mask, bool)]
    names = padded.endpoints
    return {
        e: np.asarray(out[e])[np.asarray(subject.point_mask, bool)][ep == names.index(e)]
        for e in model.endpoints
    }


def _reference(f, y0, doses, obs=OBS, state_of_cmt=lambda c: c - 1):
    """scipy through the dose history: boluses added at their time, infusions a constant input
    while they run; the states at ``obs`` (none of which is an event time)."""
    events = sorted({0.0, max(obs)} | {t for t, *_ in doses} | {t + d for t, _, _, d in doses if d})
    y = np.asarray(y0, float)
    out = {}
    for a, b in zip(events[:-1], events[1:], strict=True):
        for t, amt, cmt, d in doses:
            if t == a and not d:
                y[state_of_cmt(cmt)] += amt
        rate = np.zeros_like(y)
        for t, amt, cmt, d in doses:
            if d and t <= a < t + d:
                rate[state_of_cmt(cmt)] += amt / d
        inside = [t for t in obs if a < t <= b]
        sol = solve_ivp(
            lambda t, yy, rate=rate: np.asarray(f(t, yy)) + rate, (a, b), y, method="Radau",
            t_eval=sorted(set(inside) | {b}), rtol=1e-11, atol=1e-12,
        )  # fmt: skip
        assert sol.success
        for t in inside:
            out[t] = sol.y[:, list(sol.t).index(t)]
        y = sol.y[:, -1].copy()
    return np.array([out[t] for t in obs])


def _lagged(doses, lag, f):
    """NONMEM's lag time and bioavailability: a dose acts ``lag`` later with ``f`` times its
    amount; an infusion given by its rate keeps the rate, so it lasts ``f`` times as long."""
    return [(t + lag, a * f, c, d * f) for t, a, c, d in doses]


def _close(got, want, rtol=1e-6):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-9 * np.max(np.abs(want)))


def _hill(c, c50, h=1.0):
    c = np.maximum(c, 0.0)
    return c**h / (c50**h + c**h)


# -- PK options --------------------------------------------------------------------------------


def test_one_compartment_iv_bolus_and_infusion_analytic():
    m = B.build("b_1iv", B.PK(compartments=1, absorption="iv"))
    p = {"cl": 4.0, "v": 25.0}
    assert m.engine == "analytic" and m.compartments == {1: "central"}
    ref = _reference(lambda t, y: [-p["cl"] / p["v"] * y[0]], [0.0], DOSES)
    _close(_predict(m, p)["conc"], 1000 * ref[:, 0] / p["v"])


def test_two_compartment_oral_with_lag_and_bioavailability_analytic():
    m = B.build(
        "b_2po", B.PK(compartments=2, absorption="first_order", lag=True, bioavailability=True)
    )
    p = {"cl": 5.0, "v1": 30.0, "q": 8.0, "v2": 60.0, "ka": 1.3, "lag_depot": 0.4, "f_depot": 0.7}
    assert m.engine == "analytic" and set(m.structural_parameters) == set(p)

    def f(t, y):
        d, c, per = y
        return [-p["ka"] * d, p["ka"] * d - p["cl"] / p["v1"] * c - p["q"] / p["v1"] * c + p["q"] / p["v2"] * per,
                p["q"] / p["v1"] * c - p["q"] / p["v2"] * per]  # fmt: skip

    shifted = _lagged(DOSES, p["lag_depot"], p["f_depot"])
    ref = _reference(f, [0, 0, 0], shifted)
    _close(_predict(m, p)["conc"], 1000 * ref[:, 1] / p["v1"])


def test_three_compartment_iv_in_mg_per_litre_analytic():
    m = B.build("b_3iv", B.PK(compartments=3, unit="mg/L"))
    p = {"cl": 5.0, "v1": 20.0, "q": 6.0, "v2": 40.0, "q2": 2.0, "v3": 150.0}
    assert m.endpoint_units == {"conc": "mg/L"}

    def f(t, y):
        c, p1, p2 = y
        return [-(p["cl"] + p["q"] + p["q2"]) / p["v1"] * c + p["q"] / p["v2"] * p1 + p["q2"] / p["v3"] * p2,
                p["q"] / p["v1"] * c - p["q"] / p["v2"] * p1, p["q2"] / p["v1"] * c - p["q2"] / p["v3"] * p2]  # fmt: skip

    _close(_predict(m, p)["conc"], _reference(f, [0, 0, 0], DOSES)[:, 0] / p["v1"])


def test_transit_compartments_ode():
    m = B.build("b_tr", B.PK(compartments=1, absorption="first_order", transit=3))
    p = {"cl": 3.0, "v": 30.0, "ka": 0.9, "mtt": 2.0}
    assert m.engine == "ode"
    assert m.compartments == {
        1: "transit_1",
        2: "transit_2",
        3: "transit_3",
        4: "depot",
        5: "central",
    }
    ktr = 3 / p["mtt"]

    def f(t, y):
        t1, t2, t3, d, c = y
        return [
            -ktr * t1,
            ktr * (t1 - t2),
            ktr * (t2 - t3),
            ktr * t3 - p["ka"] * d,
            p["ka"] * d - p["cl"] / p["v"] * c,
        ]

    _close(_predict(m, p)["conc"], 1000 * _reference(f, [0] * 5, DOSES)[:, 4] / p["v"])


def test_transit_number_estimated():
    """``transit="estimated"`` (Savic et al. 2007): each dose reaches the depot with a gamma
    density of delays (shape ntr + 1, mean mtt), an infusion with that density integrated over
    it; against scipy with ``scipy.stats.gamma`` as the depot's input, after lag time and
    bioavailability; a whole ntr equals the chain of ntr + 1 compartments; the gradient in ntr
    against finite differences."""
    from scipy import stats

    pk = B.PK(compartments=1, absorption="first_order", transit="estimated", lag=True,
              bioavailability=True)  # fmt: skip
    m = B.build("b_trn", pk)
    assert m.engine == "ode" and m.compartments == {1: "transit", 2: "depot", 3: "central"}
    assert {"mtt", "ntr"} <= set(m.structural_parameters)
    assert not {"mtt", "ntr"} & set(m.occasion_parameters)
    assert B.from_definition(m.definition).definition == m.definition
    p = {"cl": 3.0, "v": 30.0, "ka": 0.9, "mtt": 2.5, "ntr": 1.6, "lag_transit": 0.4,
         "f_transit": 0.7}  # fmt: skip
    doses = _lagged(DOSES, p["lag_transit"], p["f_transit"])
    delay = stats.gamma(p["ntr"] + 1.0, scale=p["mtt"] / (p["ntr"] + 1.0))

    def into_depot(t):
        return sum(
            a / d * (delay.cdf(t - t0) - delay.cdf(t - t0 - d)) if d else a * delay.pdf(t - t0)
            for t0, a, _, d in doses
        )

    def f(t, y):
        depot, central = y
        return [into_depot(t) - p["ka"] * depot, p["ka"] * depot - p["cl"] / p["v"] * central]

    events = sorted({0.0, max(OBS)} | {t for t, *_ in doses} | {t + d for t, _, _, d in doses})
    y, want = np.zeros(2), {}
    for a, b in zip(events[:-1], events[1:], strict=True):
        inside = sorted({t for t in OBS if a < t <= b} | {b})
        sol = solve_ivp(f, (a, b), y, method="Radau", t_eval=inside, rtol=1e-11, atol=1e-12)
        assert sol.success
        want.update(zip(sol.t, sol.y[1], strict=True))
        y = sol.y[:, -1]
    _close(_predict(m, p)["conc"], [1000 * want[t] / p["v"] for t in OBS])

    whole = {"cl": 3.0, "v": 30.0, "ka": 0.9, "mtt": 2.0}
    chain = B.build("b_tr3", B.PK(compartments=1, absorption="first_order", transit=3))
    gamma = B.build("b_trn2", B.PK(compartments=1, absorption="first_order", transit="estimated"))
    _close(_predict(gamma, whole | {"ntr": 2.0})["conc"], _predict(chain, whole)["conc"])

    padded = pkpd.read_dataset(_frame(m), model=m).to_arrays()
    subject = jax.tree.map(lambda x: x[0], padded.data)
    total = jax.jit(lambda n: jnp.sum(m.predict(p | {"ntr": n}, subject)["conc"]))
    h = 1e-5
    fd = (total(p["ntr"] + h) - total(p["ntr"] - h)) / (2 * h)
    np.testing.assert_allclose(jax.grad(total)(p["ntr"]), fd, rtol=1e-5)


@pytest.mark.parametrize("elimination", ["michaelis_menten", "mixed"])
def test_michaelis_menten_elimination_ode(elimination):
    m = B.build("b_mm_" + elimination, B.PK(compartments=1, elimination=elimination))
    p = {"vmax": 6.0, "km": 1.5, "v": 25.0} | ({"cl": 1.0} if elimination == "mixed" else {})
    assert m.engine == "ode" and set(m.structural_parameters) == set(p)

    def f(t, y):
        c = y[0] / p["v"]
        return [-p["vmax"] * c / (p["km"] + c) - p.get("cl", 0.0) * c]

    _close(_predict(m, p)["conc"], 1000 * _reference(f, [0.0], DOSES)[:, 0] / p["v"])


def test_lag_and_bioavailability_in_the_ode_engine():
    m = B.build("b_mix_po", B.PK(compartments=2, absorption="first_order", elimination="mixed",
                                 lag=True, bioavailability=True))  # fmt: skip
    p = {"cl": 2.0, "vmax": 5.0, "km": 1.0, "v1": 30.0, "q": 8.0, "v2": 60.0, "ka": 1.1,
         "lag_depot": 0.6, "f_depot": 0.8}  # fmt: skip
    assert m.engine == "ode"

    def f(t, y):
        d, c, per = y
        conc = c / p["v1"]
        return [-p["ka"] * d, p["ka"] * d - p["cl"] * conc - p["vmax"] * conc / (p["km"] + conc)
                - p["q"] * (conc - per / p["v2"]), p["q"] * (conc - per / p["v2"])]  # fmt: skip

    shifted = _lagged(DOSES, p["lag_depot"], p["f_depot"])
    _close(_predict(m, p)["conc"], 1000 * _reference(f, [0, 0, 0], shifted)[:, 1] / p["v1"])


@pytest.mark.parametrize("solver, engine", [("auto", "analytic"), ("ode", "ode")])
def test_metabolite_with_molar_conversion(solver, engine):
    """Parent (two compartments) and metabolite: the closed forms (the metabolite's compartment
    one more exponential mode) and diffrax, each against scipy."""
    met = B.Metabolite("sir", molar_masses=(1030.3, 914.2), code=2)
    m = B.build("b_met", B.PK(compartments=2, metabolite=met, code=1), solver=solver)
    p = {"cl": 16.0, "v1": 20.0, "q": 9.0, "v2": 135.0, "fm": 0.5, "cl_sir": 10.0, "v_sir": 140.0}
    assert m.engine == engine and m.compartments == {1: "central", 2: "peripheral", 3: "sir"}
    assert m.endpoint_molar_masses == {"conc": 1030.3, "sir": 914.2}

    def f(t, y):
        c, per, s = y
        return [-(p["cl"] + p["q"]) / p["v1"] * c + p["q"] / p["v2"] * per, p["q"] / p["v1"] * c - p["q"] / p["v2"] * per,
                p["fm"] * p["cl"] / p["v1"] * c * 914.2 / 1030.3 - p["cl_sir"] / p["v_sir"] * s]  # fmt: skip

    ref = _reference(f, [0, 0, 0], DOSES)
    got = _predict(m, p)
    _close(got["conc"], 1000 * ref[:, 0] / p["v1"])
    _close(got["sir"], 1000 * ref[:, 2] / p["v_sir"])


def test_oral_parent_and_metabolite_closed_forms_amounts_and_modal_form():
    """Oral parent with a lag, its metabolite in mg/L, three daily doses: concentrations,
    amounts (the metabolite's the last column) and the modal form (what simulation steps)
    against scipy; the closed forms are chosen by the structure."""
    met = B.Metabolite("m", unit="mg/L", code=2)
    m = B.build("b_met_po", B.PK(absorption="first_order", lag=True, code=1, metabolite=met))
    assert m.engine == "analytic" and m.compartments == {1: "depot", 2: "central", 3: "m"}
    p = {"cl": 5.0, "v": 40.0, "ka": 0.9, "fm": 0.3, "cl_m": 2.0, "v_m": 15.0, "lag_depot": 0.5}
    doses = [(0.0, 100.0, 1, 0.0), (24.0, 100.0, 1, 0.0), (48.0, 50.0, 1, 0.0)]
    obs = [0.25, 1.0, 3.0, 7.0, 23.0, 25.0, 30.0, 47.0, 49.5, 60.0, 90.0]

    def f(t, y):
        d, c, am = y
        return [-p["ka"] * d, p["ka"] * d - p["cl"] / p["v"] * c,
                p["fm"] * p["cl"] / p["v"] * c - p["cl_m"] / p["v_m"] * am]  # fmt: skip

    ref = _reference(f, [0, 0, 0], _lagged(doses, 0.5, 1.0), obs=obs)
    padded = pkpd.read_dataset(_frame(m, doses, obs), model=m).to_arrays()
    subject = jax.tree.map(lambda x: x[0], padded.data)
    mask = np.asarray(subject.point_mask, bool)
    first = np.asarray(subject.point_endpoint)[mask] == padded.endpoints.index("m")
    got = jax.jit(m.predict)(p, subject)
    _close(np.asarray(got["m"])[mask][first], ref[:, 2] / p["v_m"])
    _close(np.asarray(got["conc"])[mask][first], 1000 * ref[:, 1] / p["v"])
    amounts = np.asarray(jax.jit(m.amounts)(p, subject))[mask][first]
    _close(amounts, ref)
    into_m = pkpd.read_dataset(_frame(m, [(0.0, 5.0, 3, 0.0)], obs), model=m).to_arrays().data
    (problem,) = m.check_subject(into_m)
    assert "[3]" in problem and "solver='ode'" in problem
    # the modal form: one dose of 1 mg into the depot at 0 h (no lag in the modal form)
    assert not m.modal_parameters_supported(list(p)) and m.modal_parameters_supported(
        [k for k in p if k != "lag_depot"]
    )
    form = m.modal_form(p)
    one = _reference(f, [1.0, 0, 0], [], obs=obs)
    for e, want in (("conc", 1000 * one[:, 1] / p["v"]), ("m", one[:, 2] / p["v_m"])):
        modal = np.exp(-np.outer(obs, np.asarray(form.poles))) @ np.asarray(form.outputs[e])
        _close(modal, want)


@pytest.mark.parametrize("solver", ["ode", "auto"])
def test_turnover_driven_by_the_metabolite_through_an_effect_site(solver):
    met = B.Metabolite("m1", code=2)
    block = B.IndirectResponse("r", kind=1, unit="U", driver="m1", effect_compartment=True, code=3)
    m = B.build("b_met_idr", B.PK(code=1, metabolite=met), block, solver=solver)
    assert m.engine == {"auto": "grid", "ode": "ode"}[solver]
    p = {"cl": 4.0, "v": 25.0, "fm": 0.4, "cl_m1": 3.0, "v_m1": 50.0, "r_base": 50.0,
         "r_kout": 0.2, "r_imax": 0.8, "r_ic50": 150.0, "r_ke0": 0.7}  # fmt: skip

    def f(t, y):
        a, am, ce, r = y
        cm = 1000 * am / 50.0
        return [-4.0 / 25.0 * a, 0.4 * 4.0 / 25.0 * a - 3.0 / 50.0 * am, 0.7 * (cm - ce),
                10.0 * (1 - 0.8 * _hill(ce, 150.0)) - 0.2 * r]  # fmt: skip

    ref = _reference(f, [0, 0, 0, 50.0], DOSES)
    got = _predict(m, p)
    _close(got["m1"], 1000 * ref[:, 1] / 50.0, TOL[solver])
    _close(got["r"], ref[:, 3], TOL[solver])


# -- PD blocks ---------------------------------------------------------------------------------

PK1 = {"cl": 4.0, "v": 25.0}


def _pk1(t, y):
    return [-PK1["cl"] / PK1["v"] * y[0]]


def test_direct_emax_on_the_analytic_engine():
    m = B.build("b_emax", B.PK(code=1), B.Direct("hr", form="emax", unit="bpm", code=2))
    p = PK1 | {"hr_e0": 70.0, "hr_emax": 30.0, "hr_ec50": 1500.0}
    assert m.engine == "analytic"
    c = 1000 * _reference(_pk1, [0.0], DOSES)[:, 0] / PK1["v"]
    _close(_predict(m, p)["hr"], 70 + 30 * _hill(c, 1500.0))


@pytest.mark.parametrize("solver", ["ode", "auto"])
def test_sigmoid_imax_through_an_effect_compartment(solver):
    block = B.Direct("s6", form="sigmoid_imax", unit="%", effect_compartment=True, code=2)
    m = B.build("b_imax_ce", B.PK(code=1), block, solver=solver)
    p = PK1 | {"s6_e0": 100.0, "s6_imax": 0.85, "s6_ic50": 900.0, "s6_hill": 1.7, "s6_ke0": 0.3}
    assert m.engine == {"ode": "ode", "auto": "grid"}[solver] and set(
        m.structural_parameters
    ) == set(p)

    def f(t, y):
        a, ce = y
        return [-PK1["cl"] / PK1["v"] * a, p["s6_ke0"] * (1000 * a / PK1["v"] - ce)]

    ce = _reference(f, [0, 0], DOSES)[:, 1]
    _close(_predict(m, p)["s6"], 100 * (1 - 0.85 * _hill(ce, 900.0, 1.7)))


#: Relative error allowed against scipy: the ODE engine (rtol 1e-8) and the grid engine (closed
#: form PK, exponential integrator of the turnover on pkpd.pd.forced's grid: ~1e-5 by design).
TOL = {"ode": 1e-6, "auto": 5e-5}


@pytest.mark.parametrize("solver", ["ode", "auto"])
@pytest.mark.parametrize("kind", [1, 2, 3, 4])
def test_indirect_response_models(kind, solver):
    hill = kind == 2
    turnover = "mrt" if kind == 3 else "kout"
    block = B.IndirectResponse("r", kind=kind, unit="U", hill=hill, turnover=turnover, code=2)
    m = B.build(f"b_idr{kind}", B.PK(code=1), block, solver=solver)
    p = dict(PK1, r_base=50.0)
    p |= {"r_mrt": 4.0} if turnover == "mrt" else {"r_kout": 0.25}
    p |= {"r_imax": 0.7, "r_ic50": 1200.0} if kind <= 2 else {"r_emax": 1.5, "r_ec50": 1200.0}
    p |= {"r_hill": 2.2} if hill else {}
    assert set(m.structural_parameters) == set(p)
    kout = 0.25 if turnover == "kout" else 1 / 4.0
    kin = 50.0 * kout

    def f(t, y):
        a, r = y
        c = 1000 * a / PK1["v"]
        inh = 0.7 * _hill(c, 1200.0, p.get("r_hill", 1.0))
        stim = 1.5 * _hill(c, 1200.0)
        d = {1: kin * (1 - inh) - kout * r, 2: kin - kout * (1 - inh) * r,
             3: kin * (1 + stim) - kout * r, 4: kin - kout * (1 + stim) * r}[kind]  # fmt: skip
        return [-PK1["cl"] / PK1["v"] * a, d]

    _close(_predict(m, p)["r"], _reference(f, [0, 50.0], DOSES)[:, 1], TOL[solver])


@pytest.mark.parametrize("solver", ["ode", "auto"])
def test_bounded_turnover_through_an_effect_compartment(solver):
    block = B.BoundedTurnover("pd1", effect_compartment=True, turnover="mrt", code=2)
    m = B.build("b_bt", B.PK(code=1), block, solver=solver)
    p = PK1 | {
        "pd1_base": 16.8,
        "pd1_mrt": 30.0,
        "pd1_imax": 0.6,
        "pd1_ic50": 500.0,
        "pd1_ke0": 0.5,
    }
    assert m.endpoint_units["pd1"] == "%"
    kout = 1 / 30.0
    kin = kout * 16.8 / (100 - 16.8)

    def f(t, y):
        a, ce, pct = y
        return [-PK1["cl"] / PK1["v"] * a, 0.5 * (1000 * a / PK1["v"] - ce),
                kin * (1 - 0.6 * _hill(ce, 500.0)) * (100 - pct) - kout * pct]  # fmt: skip

    got = _predict(m, p)["pd1"]
    _close(got, _reference(f, [0, 0, 16.8], DOSES)[:, 2], TOL[solver])
    assert np.all((got > 0) & (got < 100))


def test_pd_driven_by_the_metabolite_and_endpoint_selection():
    met = B.Metabolite("m1", code=2)
    m = B.build("b_met_pd", B.PK(code=1, metabolite=met),
                B.Direct("e", form="imax", driver="m1", unit="U", code=3))  # fmt: skip
    assert m.parameters["e_ic50"] == "ng/mL"
    p = {"cl": 4.0, "v": 25.0, "fm": 0.4, "cl_m1": 3.0, "v_m1": 50.0,
         "e_e0": 10.0, "e_imax": 0.9, "e_ic50": 200.0}  # fmt: skip

    def f(t, y):
        a, am = y
        return [-4.0 / 25.0 * a, 0.4 * 4.0 / 25.0 * a - 3.0 / 50.0 * am]

    cm = 1000 * _reference(f, [0, 0], DOSES)[:, 1] / 50.0
    _close(_predict(m, p)["e"], 10 * (1 - 0.9 * _hill(cm, 200.0)))
    pk_only = m.with_endpoints(["conc"])
    assert pk_only.endpoints == ("conc",) and "e_ic50" not in pk_only.parameters
    _close(_predict(pk_only, {k: v for k, v in p.items() if not k.startswith("e_")})["conc"],
           1000 * _reference(f, [0, 0], DOSES)[:, 0] / 25.0)  # fmt: skip


@pytest.mark.parametrize("solver", ["ode", "auto"])
def test_an_active_moiety_drives_a_direct_effect(solver):
    """Parent + metabolite in nM (molar masses 500 and 400 g/mol), weighted by an estimated
    potency, driving a sigmoid Imax on % of baseline (E0 fixed at 100)."""
    met = B.Metabolite("m1", molar_masses=(500.0, 400.0), code=2, prefix="m")
    m = B.build("b_moiety", B.PK(code=1, metabolite=met),
                B.ActiveMoiety("active", {"conc": 1.0, "m1": "potency"}, unit="nM"),
                B.Direct("e", form="sigmoid_imax", unit="% of baseline", driver="active",
                         baseline=100.0, code=3), solver=solver)  # fmt: skip
    assert m.engine == {"auto": "analytic", "ode": "ode"}[solver]
    assert m.parameters["e_ic50"] == "nM" and "e_e0" not in m.parameters
    assert set(m.structural_parameters) == {"cl", "v", "fm", "cl_m", "v_m", "potency", "e_imax",
                                            "e_ic50", "e_hill"}  # fmt: skip
    assert m.hill_levels == {"e_ic50": ("e_hill", "potency")} and m.costly_endpoints == ("e",)
    p = {"cl": 4.0, "v": 25.0, "fm": 0.4, "cl_m": 3.0, "v_m": 50.0, "potency": 2.5,
         "e_imax": 0.9, "e_ic50": 30.0, "e_hill": 1.5}  # fmt: skip

    def f(t, y):
        a, am = y
        return [-4.0 / 25.0 * a, 0.4 * 4.0 / 25.0 * a * 400.0 / 500.0 - 3.0 / 50.0 * am]

    ref = _reference(f, [0, 0], DOSES)
    nm = 1e6 * ref[:, 0] / 25.0 / 500.0 + 2.5 * 1e6 * ref[:, 1] / 50.0 / 400.0  # mg/L -> nM
    _close(_predict(m, p)["e"], 100 * (1 - 0.9 * _hill(nm, 30.0, 1.5)))
    rebuilt = B.from_definition(m.definition)
    assert rebuilt.definition == m.definition and rebuilt.parameters == m.parameters


# -- definition checks, priors, files ------------------------------------------------------------


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: B.PK(absorption="oral"), ["absorption='oral'", "'first_order'"]),
        (lambda: B.PK(compartments=4), ["compartments=4", "1, 2 or 3"]),
        (lambda: B.PK(transit=2), ["absorption='first_order'"]),
        (lambda: B.PK(absorption="first_order", transit="some"), ["'estimated'"]),
        (lambda: B.PK(absorption="first_order", transit=True), ["whole number"]),
        (lambda: B.PK(unit="nM"), ["'nM'", "mass concentration"]),
        (lambda: B.IndirectResponse("r", kind=5), ["kind=5", "1, 2, 3 or 4"]),
        (lambda: B.Direct("e", form="linear"), ["form='linear'", "'sigmoid_emax'"]),
        (lambda: B.Direct("e", error="normal"), ["error='normal'", "'combined'"]),
        (lambda: B.build("x", B.PK(), B.Direct("e", driver="ce")), ["driver 'ce'", "'conc'"]),
        (lambda: B.build("x", B.PK(), B.Direct("conc")), ["conc used twice"]),
        (lambda: B.build("x", B.PK(code=1), B.Direct("e")), ["not for e", "code="]),
        (
            lambda: B.build("x", B.PK(), typical={"cl": 1.0, "vv": 2.0}),
            ["vv", "lacks a value for v"],
        ),
        (
            lambda: B.build(
                "x",
                B.PK(metabolite=B.Metabolite("m")),
                B.ActiveMoiety("a", {"conc": 1.0, "m": 1.0}, unit="nM"),
                B.Direct("e", driver="a"),
            ),
            ["ActiveMoiety 'a'", "'conc' in ng/mL cannot be converted to nM", "molar_masses"],
        ),
        (
            lambda: B.build(
                "x",
                B.PK(),
                B.ActiveMoiety("a", {"cp": 1.0}, unit="ng/mL"),
                B.Direct("e", driver="a"),
            ),
            ["'cp' is not a concentration endpoint", "'conc'"],
        ),
        (lambda: B.ActiveMoiety("a", {}), ["terms={}", "mapping"]),
        (lambda: B.ActiveMoiety("a", {"conc": "2x"}), ["'2x'", "identifier"]),
        (lambda: B.ActiveMoiety("a", {"conc": 1.0}, unit="h"), ["'h'", "not a concentration"]),
        (
            lambda: B.build("x", B.PK(), B.Direct("e1", prefix="p"), B.Direct("e2", prefix="p")),
            ["p_e0", "more than one block", "prefix="],
        ),
        (lambda: B.Direct("e", baseline="high"), ["baseline='high'", "a number"]),
        (lambda: B.PK(binding="yes"), ["binding='yes'", "True or False"]),
        (lambda: B.Direct("e", metrics=["auc"]), ["kind='auc'", "'change_pct'"]),
        (lambda: B.Metric("change_pct", at_h=-2), ["at_h=-2", "a time > 0"]),
        (lambda: B.Metric("change_pct", description=" "), ["description=' '", "non-empty"]),
        (
            lambda: B.build(
                "x", B.PK(bioavailability=True), typical={"cl": 1, "v": 2, "f_central": 1.5}
            ),
            ["f_central=1.5", "in (0, 1)"],
        ),
    ],
)
def test_a_wrong_block_says_what_to_write(make, words):
    with pytest.raises(ValueError) as e:
        make()
    for w in words:
        assert w in str(e.value)


def test_default_priors_from_typical_values():
    m = B.build(
        "b_pri", B.PK(absorption="first_order", code=1), B.BoundedTurnover("pct", code=2),
        typical={"cl": 3.0, "v": 30.0, "ka": 1.0, "pct_base": 20.0, "pct_kout": 0.1,
                 "pct_imax": 0.5, "pct_ic50": 100.0},
    )  # fmt: skip
    pri = pkpd.load_priors(model=m)
    assert pri.typical()["cl"] == pytest.approx(3.0) and pri.typical()["pct_base"] == pytest.approx(
        20.0
    )
    raw = m.default_priors
    assert raw["parameters"]["pct_base"]["transform"] == "logit"
    assert raw["parameters"]["pct_imax"]["prior"]["family"] == "logitnormal"
    assert (
        raw["residual"]["pct"]["model"] == "logit"
        and raw["residual"]["conc"]["model"] == "combined"
    )
    only_pk = B.build(
        "b_pri2", B.PK(absorption="first_order", code=1), B.BoundedTurnover("pct", code=2),
        typical=dict(m.typical), variability={"cl": 0.4, "v": 0.2},
    )  # fmt: skip
    bsv = {k: e.get("bsv") for k, e in only_pk.default_priors["parameters"].items()}
    assert bsv["cl"]["scale"] == 0.4 and bsv["v"]["scale"] == 0.2 and bsv["pct_ic50"] is None
    assert B.from_definition(only_pk.definition) == only_pk
    with pytest.raises(ValueError, match="variability names cll"):
        B.build("b_pri3", B.PK(), typical={"cl": 1.0, "v": 2.0}, variability={"cll": 0.3})


def test_a_model_file_built_from_blocks(tmp_path):
    path = tmp_path / "idr_drug.py"
    path.write_text(
        "from pkpd.models import blocks\n"
        "model = blocks.build('idr_drug', blocks.PK(absorption='first_order', code=1),\n"
        "    blocks.IndirectResponse('marker', kind=1, unit='U/L', code=2),\n"
        "    typical={'cl': 3.0, 'v': 30.0, 'ka': 1.2, 'marker_base': 100.0,\n"
        "             'marker_kout': 0.2, 'marker_imax': 0.8, 'marker_ic50': 2000.0})\n"
    )
    m = pkpd.models.load_model(str(path))
    assert m.name == "idr_drug" and m.endpoint_codes == {1: "conc", 2: "marker"}
    out = tmp_path / "priors.toml"
    from pkpd.cli import main

    assert main(["priors", "--model", str(path), "--out", str(out)]) == 0
    text = out.read_text()
    assert "[parameters.marker_ic50]" in text and "median = 2000.0" in text


def test_a_fit_file_rebuilds_its_block_model_in_another_process(tmp_path):
    """The fit stores the blocks (``model_definition``): a new process simulates the fit file
    without the code that built the model."""
    import subprocess
    import sys

    from pkpd.simulate import fit_from_values

    typical = {"cl": 3.0, "v": 30.0, "ka": 1.2, "marker_base": 100.0, "marker_kout": 0.15,
               "marker_imax": 0.8, "marker_ic50": 1500.0}  # fmt: skip
    m = B.build(
        "b_stored",
        B.PK(absorption="first_order", code=1),
        B.IndirectResponse("marker", kind=1, unit="U/L", code=2),
        typical=typical,
    )
    data = _frame(m, doses=[(0.0, 200.0, 1, 0.0)], obs=[1.0, 4.0, 24.0])
    fit = fit_from_values(m, data, typical, n_draws=2)
    assert B.from_definition(m.definition) == m
    path = tmp_path / "fit.nc"
    pkpd.save_fit(fit, path)
    code = (
        "import sys, pkpd\n"
        "sim = pkpd.simulate(pkpd.load_fit(sys.argv[1]), '200 mg q24h x 3', n_subjects=2,"
        " n_draws=2, times=[0.0, 2.0, 48.0], progress_bar=False)\n"
        "print(pkpd.models.load_model('b_stored').engine, float(sim['marker'].min()))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=1800
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    engine, lowest = proc.stdout.split()
    # IDR I with imax 0.8: the marker falls below its baseline but stays above 20% of it
    assert engine == "grid" and 20.0 < float(lowest) < 100.0


def test_parameters_per_occasion_agree_between_engines():
    """IOV on a PK and a PD parameter: the closed forms (analytic engine, each occasion's doses
    with its parameters, amounts carried over) and diffrax (parameters switched at each
    occasion's start) give the same predictions."""
    rows = []
    for k, t0 in enumerate((0.0, 24.0, 48.0)):
        rows.append(dict(ID=1, TIME=t0, EVID=1, AMT=100.0, CMT=1, DVID=".", DV=".", OCC=k + 1))
        for dt in (0.5, 2.0, 6.0, 20.0):
            for code in (1, 2):
                rows.append(
                    dict(ID=1, TIME=t0 + dt, EVID=0, AMT=0, CMT=0, DVID=code, DV=1.0, OCC=k + 1)
                )
    df = pd.DataFrame(rows)
    p = {"cl": jnp.array([3.0, 4.5, 2.0]), "v": 25.0, "ka": 1.1, "e_e0": jnp.array([60.0, 70.0, 80.0]),
         "e_emax": 40.0, "e_ec50": 2000.0}  # fmt: skip
    out = {}
    for solver in ("auto", "ode"):
        m = B.build(f"b_iov_{solver}", B.PK(absorption="first_order", code=1),
                    B.Direct("e", unit="U", code=2), solver=solver)  # fmt: skip
        padded = pkpd.read_dataset(df, model=m).to_arrays()
        subject = jax.tree.map(lambda x: x[0], padded.data)
        assert subject.has_occasions
        pred = jax.jit(m.predict)(p, subject)
        assert bool(pred["ok"])
        mask = np.asarray(subject.point_mask, bool)
        out[solver] = {e: np.asarray(pred[e])[mask] for e in ("conc", "e")}
    for e in ("conc", "e"):
        _close(out["auto"][e], out["ode"][e])
    assert np.ptp(out["auto"]["e"]) > 10  # the occasions' values are in use


#: Occasions of the closed-form IOV case: 2 starts with drug of dose 1 present and no dose,
#: 3 at an oral dose; the central infusion of occasion 2 ends inside it.
IOV_STARTS = (0.0, 10.0, 24.0)
IOV_DOSES = [(0.0, 100.0, 1, 0.0), (12.0, 60.0, 2, 2.0), (24.0, 80.0, 1, 0.0)]
IOV_OBS = [0.5, 2.0, 6.0, 9.5, 10.0, 11.0, 12.5, 13.5, 16.0, 23.0, 24.0, 24.7, 30.0, 47.0]
IOV_PER = dict(
    cl=[4.0, 6.5, 2.5], v=[25.0, 20.0, 32.0], ka=[1.2, 0.6, 2.0], fm=[0.4, 0.3, 0.5],
    cl_m=[3.0, 4.0, 2.0], potency=[2.5, 1.5, 3.0], e_ke0=[0.7, 0.3, 1.1], e_ic50=[30.0, 45.0, 20.0],
)  # fmt: skip
IOV_FIXED = dict(v_m=50.0, e_imax=0.9, e_hill=1.5, r_base=50.0, r_kout=0.2, r_imax=0.8,
                 r_ic50=150.0)  # fmt: skip


def _iov_occasion(t):
    return sum(t >= s for s in IOV_STARTS[1:])


def _iov_reference():
    """scipy (Radau, rtol 1e-11) of depot, central, metabolite, effect site and response with
    every parameter switched at each occasion's start (NONMEM's convention: an occasion's first
    time belongs to it) and the states carried over; the endpoints at IOV_OBS."""
    events = sorted(set(IOV_STARTS) | set(IOV_OBS) | {t for t, *_ in IOV_DOSES}
                    | {t + d for t, _, _, d in IOV_DOSES if d})  # fmt: skip

    def par(t):
        k = _iov_occasion(t)
        return {**IOV_FIXED, **{n: v[k] for n, v in IOV_PER.items()}}

    def moiety(y, p):  # nM: 1e6·mg/L / (g/mol), parent 500 g/mol, metabolite 400
        return 1e6 * y[1] / p["v"] / 500.0 + p["potency"] * 1e6 * y[2] / p["v_m"] / 400.0

    def rhs(t, y, p, rate):
        depot, a, am, ce, r = y
        cm = 1000 * am / p["v_m"]
        kin = p["r_base"] * p["r_kout"]
        return [
            -p["ka"] * depot,
            p["ka"] * depot - p["cl"] / p["v"] * a + rate,
            p["fm"] * p["cl"] / p["v"] * a * 400.0 / 500.0 - p["cl_m"] / p["v_m"] * am,
            p["e_ke0"] * (moiety(y, p) - ce),
            kin * (1 - p["r_imax"] * _hill(cm, p["r_ic50"])) - p["r_kout"] * r,
        ]

    y, t0, out = np.array([0.0, 0.0, 0.0, 0.0, 50.0]), 0.0, {}
    for t in events:
        if t > t0:
            rate = sum(a / d for s, a, c, d in IOV_DOSES if d and s <= t0 < s + d)
            y = solve_ivp(rhs, (t0, t), y, args=(par(t0), rate), method="Radau", rtol=1e-11,
                          atol=1e-12).y[:, -1]  # fmt: skip
            t0 = t
        for s, a, c, d in IOV_DOSES:
            if s == t and not d:
                y[c - 1] += a
        if t in IOV_OBS:
            p = par(t)
            out[t] = dict(conc=1000 * y[1] / p["v"], m1=1000 * y[2] / p["v_m"],
                          e=100 * (1 - p["e_imax"] * _hill(y[3], p["e_ic50"], p["e_hill"])),
                          r=y[4])  # fmt: skip
    return out


@pytest.mark.parametrize("kinds", ["any", "a fit's"])
def test_parameters_per_occasion_of_the_whole_chain_on_the_closed_forms(kinds, monkeypatch):
    """Oral and central doses, a metabolite, a moiety through an effect site (sigmoid Imax) and
    an indirect response with PK, metabolite, potency and effect-site parameters per occasion:
    the closed forms (every state carried over, :meth:`BlockModel._predict_occasions`) against
    scipy with the parameters switched at each occasion's start."""
    from pkpd.pk import analytic

    met = B.Metabolite("m1", molar_masses=(500.0, 400.0), code=2, prefix="m")
    m = B.build("b_iov_chain", B.PK(absorption="first_order", code=1, metabolite=met),
                B.ActiveMoiety("active", {"conc": 1.0, "m1": "potency"}, unit="nM"),
                B.Direct("e", form="sigmoid_imax", unit="% of baseline", driver="active",
                         baseline=100.0, effect_compartment=True, code=3),
                B.IndirectResponse("r", kind=1, unit="U", driver="m1", code=4))  # fmt: skip
    if kinds == "a fit's":
        m = m.with_dose_kinds((analytic.BOLUS, analytic.INFUSION))
    rows = [dict(ID=1, TIME=t, EVID=1, AMT=a, CMT=c, RATE=(a / d if d else 0.0), DVID=".", DV=".")
            for t, a, c, d in IOV_DOSES]  # fmt: skip
    rows += [dict(ID=1, TIME=t, EVID=0, AMT=0, CMT=0, RATE=0, DVID=code, DV=1.0)
             for t in IOV_OBS for code in (1, 2, 3, 4)]  # fmt: skip
    df = pd.DataFrame(rows).sort_values("TIME", kind="stable")
    df["OCC"] = [_iov_occasion(t) + 1 for t in df.TIME]
    padded = pkpd.read_dataset(df, model=m).to_arrays()
    subject = jax.tree.map(lambda x: x[0], padded.data)
    params = {**IOV_FIXED, **{k: jnp.asarray(v) for k, v in IOV_PER.items()}}

    def no_ode(*args):
        raise AssertionError("the closed forms were expected, not the ODE engine")

    monkeypatch.setattr(B.BlockModel, "_predict_ode", no_ode)
    out = jax.jit(m.predict)(params, subject)
    assert bool(out["ok"])
    mask = np.asarray(subject.point_mask, bool)
    ep = np.asarray(subject.point_endpoint)[mask]
    ref = _iov_reference()
    assert ref[11.0]["conc"] > 100 and ref[10.0]["e"] < 90  # drug carried into occasion 2
    for e, rtol in (("conc", 1e-8), ("m1", 1e-8), ("e", 1e-8), ("r", TOL["auto"])):
        got = np.asarray(out[e])[mask][ep == padded.endpoints.index(e)]
        _close(got, np.array([ref[t][e] for t in IOV_OBS]), rtol)
    # the same parameters on every occasion give the model without occasions
    same = {k: (v[0] if jnp.ndim(v) else v) for k, v in params.items()}
    plain = jax.jit(m.predict)(same, subject)
    flat = jax.jit(m.predict)(
        {k: jnp.full(3, v) if k in IOV_PER else v for k, v in same.items()}, subject
    )
    for e in ("conc", "m1", "e", "r"):
        _close(np.asarray(flat[e])[mask], np.asarray(plain[e])[mask], 1e-9)


def test_parameters_per_occasion_need_occasions_and_data_timed_doses():
    """Per-occasion values on data without occasions, or with a modelled lag (which can carry a
    dose across a boundary), are refused with what to do."""
    m = B.build("b_iov_errors", B.PK(absorption="first_order", lag=True, code=1),
                B.Direct("e", unit="U", effect_compartment=True, code=2))  # fmt: skip
    df = _frame(m, doses=[(0.0, 100.0, 1, 0.0)], obs=[1.0, 4.0])
    subject = jax.tree.map(lambda x: x[0], pkpd.read_dataset(df, model=m).to_arrays().data)
    p = {"cl": jnp.array([3.0, 4.0]), "v": 25.0, "ka": 1.1, "e_e0": 1.0, "e_emax": 2.0,
         "e_ec50": 100.0, "e_ke0": 0.5}  # fmt: skip
    with pytest.raises(ValueError, match="have no occasions"):
        m.predict(p, subject)
    df["OCC"] = 1
    subject = jax.tree.map(lambda x: x[0], pkpd.read_dataset(df, model=m).to_arrays().data)
    with pytest.raises(ValueError, match=r"modelled lag_depot .* give lags and infusion times"):
        m.predict({**p, "cl": jnp.array([3.0]), "lag_depot": 0.5}, subject)


def test_a_wrong_block_in_a_model_file_is_named_by_the_cli(tmp_path, capsys):
    path = tmp_path / "bad.py"
    path.write_text(
        "from pkpd.models import blocks\nmodel = blocks.build('bad', blocks.PK(absorption='oral'))\n"
    )
    from pkpd.cli import main

    assert main(["priors", "--model", str(path), "--out", str(tmp_path / "p.toml")]) == 2
    err = capsys.readouterr().err
    assert "bad.py, line 2" in err and "absorption='oral'" in err and "'first_order'" in err
    assert "Traceback" not in err and not (tmp_path / "p.toml").exists()


def test_steady_state_doses_are_refused_by_the_turnover_engines():
    rows = [dict(ID=1, TIME=0.0, EVID=1, AMT=100.0, CMT=1, SS=1, II=24.0, DVID=".", DV="."),
            dict(ID=1, TIME=2.0, EVID=0, AMT=0, CMT=0, SS=0, II=0, DVID=1, DV=1.0),
            dict(ID=1, TIME=2.0, EVID=0, AMT=0, CMT=0, SS=0, II=0, DVID=2, DV=1.0)]  # fmt: skip
    df = pd.DataFrame(rows)
    grid = B.build("b_ss", B.PK(code=1), B.IndirectResponse("r", code=2))
    padded = pkpd.read_dataset(df, model=grid).to_arrays()
    assert "steady-state doses" in " ".join(grid.check_subject(padded.data))
    direct = B.build("b_ss_direct", B.PK(code=1), B.Direct("e", code=2))
    assert direct.check_subject(pkpd.read_dataset(df, model=direct).to_arrays().data) == []


def test_a_block_model_simulates_by_its_modal_form_with_its_metrics():
    """``pkpd.simulate`` steps the modal form of a PK/PD block model (oral parent and metabolite,
    an effect-site Imax, a stimulated indirect response, a bounded turnover) and reports the
    blocks' metrics and an exposure moiety; profiles and metrics against scipy's solve of the
    same equations through the same regimen."""
    from pkpd.simulate import fit_from_values

    met = B.Metabolite("m1", molar_masses=(400.0, 300.0), code=2)
    m = B.build(
        "b_modal",
        B.PK(absorption="first_order", code=1, metabolite=met),
        B.ActiveMoiety("total", {"conc": 1.0, "m1": 1.0}, unit="nmol/L", exposure=True),
        B.Direct("inh", form="sigmoid_imax", unit="% of baseline", baseline=100.0,
                 effect_compartment=True, code=3, metrics=["inhibition_trough"]),
        B.IndirectResponse("mk", kind=3, unit="U/L", driver="m1", code=4, metrics="change_pct"),
        B.BoundedTurnover("pct", code=5, metrics=[B.Metric("change_abs", "pct_day3", at_h=72.0,
                                                          description="day-3 change")]),
        typical={"cl": 4.0, "v": 25.0, "ka": 1.1, "fm": 0.5, "cl_m1": 3.0, "v_m1": 40.0,
                 "inh_imax": 0.9, "inh_ic50": 800.0, "inh_hill": 1.5, "inh_ke0": 0.4,
                 "mk_base": 50.0, "mk_kout": 0.1, "mk_emax": 2.0, "mk_ec50": 600.0,
                 "pct_base": 20.0, "pct_kout": 0.05, "pct_imax": 0.7, "pct_ic50": 1500.0},
    )  # fmt: skip
    p = dict(m.typical)
    assert B.from_definition(m.definition) == m
    fit = fit_from_values(m, _frame(m, doses=[(0.0, 100.0, 1, 0.0)], obs=[2.0]), p, n_draws=1)
    times = np.array([2.0, 6.0, 24.0, 30.0, 50.0, 72.0, 96.0])
    sim = pkpd.simulate(fit, "100 mg q24h x4", n_subjects=1, n_draws=1, times=times,
                        progress_bar=False)  # fmt: skip
    assert sim.attrs["engine"] == "modal"

    def f(t, y):
        a_d, a, a_m, ce, mk, pct = y
        c, cm = 1000 * a / 25.0, 1000 * a_m / 40.0
        kin_p = 0.05 * 20.0 / 80.0
        return [
            -1.1 * a_d, 1.1 * a_d - 4.0 / 25.0 * a, 0.5 * 4.0 / 25.0 * a * 300 / 400 - 3 / 40 * a_m,
            0.4 * (c - ce), 5.0 * (1 + 2.0 * _hill(cm, 600.0)) - 0.1 * mk,
            kin_p * (1 - 0.7 * _hill(c, 1500.0)) * (100 - pct) - 0.05 * pct,
        ]  # fmt: skip

    doses = [(24.0 * i, 100.0, 1, 0.0) for i in range(4)]
    # the troughs just before a dose: reference points a hair before the dose times
    obs = sorted(set(times) | {24.0 - 1e-9, 96.0 - 1e-9})
    ref = dict(zip(obs, _reference(f, [0, 0, 0, 0, 50.0, 20.0], doses, obs=obs), strict=True))
    r = np.array([ref[t] for t in times])
    conc, m1 = 1000 * r[:, 1] / 25.0, 1000 * r[:, 2] / 40.0
    want = {"conc": conc, "m1": m1, "inh": 100 * (1 - 0.9 * _hill(r[:, 3], 800.0, 1.5)),
            "mk": r[:, 4], "pct": r[:, 5]}  # fmt: skip
    for e, w in want.items():
        _close(sim[e].values[0, 0, 0], w, 1e-9 if e in ("conc", "m1", "inh") else 5e-5)

    def at(t, j):
        return ref[t][j]

    # ng/mL → nmol/L: × 1000 / molar mass (g/mol)
    total = {t: 1e6 * at(t, 1) / 25.0 / 400.0 + 1e6 * at(t, 2) / 40.0 / 300.0 for t in ref}
    metrics = {
        "ctrough_total_c1": total[24.0 - 1e-9],
        "ctrough_total_ss": total[96.0 - 1e-9],
        "inh_inhibition_trough_c1": 90 * _hill(at(24.0 - 1e-9, 3), 800.0, 1.5),
        "inh_inhibition_trough_ss": 90 * _hill(at(96.0 - 1e-9, 3), 800.0, 1.5),
        "mk_change_pct": 100 * (at(96.0, 4) / 50.0 - 1),
        "pct_day3": at(72.0, 5) - 20.0,
    }
    for name, value in metrics.items():  # a change magnifies the states' relative error
        _close(float(sim[name].values[0, 0, 0]), value, 1e-8 if "total" in name else 1e-4)
    assert sim["ctrough_total_c1"].attrs["units"] == "nmol/L"
    assert sim["pct_day3"].attrs["units"] == "percentage points"
    assert sim["pct_day3"].attrs["long_name"] == "day-3 change"
    assert sim["inh_inhibition_trough_ss"].attrs["units"] == "%"
    # a change asked for past the horizon is left out; a trough inhibition needs % of baseline
    short = m.response_metrics(m.endpoints, 48.0)
    assert "pct_day3" not in short and short["mk_change_pct"].time_h == 48.0
    with pytest.raises(ValueError, match="needs the endpoint in '% of baseline', not 'U/L'"):
        B.IndirectResponse("mk", unit="U/L", metrics=["inhibition_trough"])
    with pytest.raises(ValueError, match="exposure=True needs numbers as weights"):
        B.ActiveMoiety("d", {"conc": 1.0, "m1": "potency"}, exposure=True)
    with pytest.raises(ValueError, match="metric name.* inh_x used twice"):
        B.build(
            "b_twice",
            B.PK(),
            B.Direct(
                "inh", metrics=[B.Metric("change_pct", "inh_x"), B.Metric("change_abs", "inh_x")]
            ),
        )
