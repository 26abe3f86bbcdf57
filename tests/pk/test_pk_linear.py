"""General linear systems by the matrix exponential, against the closed forms and scipy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

import pkpd
from pkpd.models.temsirolimus import MW_SIR, MW_TEM, TYPICAL, TemsirolimusModel
from pkpd.pk.linear import LinearSystemModel


def subject(rows, times):
    recs = [dict(ID=1, EVID=1, **r) for r in rows] + [
        dict(ID=1, TIME=t, EVID=0, AMT=0.0) for t in times
    ]
    df = pd.DataFrame(recs).fillna(0.0).sort_values("TIME", kind="stable")
    return jax.tree.map(lambda x: jnp.asarray(x[0]), pkpd.read_dataset(df).to_arrays().data)


TWO = LinearSystemModel(
    "two_cmt_by_expm",
    ["central", "peripheral"],
    {"central->peripheral": "k12", "peripheral->central": "k21", "central->": "k10"},
    {"conc": ("central", "v1")},
)


def test_two_compartments_equal_the_closed_form_for_every_dose_type():
    cl, v1, q, v2 = 16.2, 35.0, 8.7, 137.0
    times = [0.1, 0.5, 1, 5, 24, 30, 49, 60, 100]
    rows = [
        dict(TIME=0.0, AMT=25.0, DUR=0.5),  # infusion by duration
        dict(TIME=24.0, AMT=50.0),  # bolus
        dict(TIME=48.0, AMT=40.0, RATE=20.0),  # infusion by rate
        dict(TIME=72.0, AMT=30.0, DUR=2.0, SS=2, II=24.0),  # steady-state infusion added
    ]
    s = subject(rows, times)
    closed = pkpd.load_model("two_cmt_iv").predict({"cl": cl, "v1": v1, "q": q, "v2": v2}, s)[
        "conc"
    ]
    expm = TWO.predict({"k10": cl / v1, "k12": q / v1, "k21": q / v2, "v1": v1}, s)["conc"]
    np.testing.assert_allclose(np.asarray(expm), np.asarray(closed), rtol=1e-9)


def test_parent_metabolite_equals_the_polyexponential_convolution():
    p = TYPICAL
    chain = LinearSystemModel(
        "tem_sir",
        ["central", "peripheral", "sirolimus"],
        {
            "central->peripheral": "k12",
            "peripheral->central": "k21",
            "central->sirolimus": "kf",
            "central->": "k10_rest",
            "sirolimus->": "ks",
        },  # fmt: skip
        {"temsirolimus": ("central", "v1"), "sirolimus": ("sirolimus", "v_sir_tem")},
    )
    k10 = p["cl"] / p["v1"]
    # amounts of sirolimus are fm x MW ratio of the cleared temsirolimus: rescale the volume
    par = {
        "k12": p["q"] / p["v1"],
        "k21": p["q"] / p["v2"],
        "kf": p["fm"] * k10,
        "k10_rest": (1 - p["fm"]) * k10,
        "ks": p["cl_sir"] / p["v_sir"],
        "v1": p["v1"],
        "v_sir_tem": p["v_sir"] * MW_TEM / MW_SIR,
    }
    times = [0.25, 0.5, 2, 24, 100, 168.5, 300]
    s = subject([dict(TIME=0.0, AMT=25.0, DUR=0.5), dict(TIME=168.0, AMT=75.0, DUR=0.5)], times)
    a = chain.predict(par, s)
    b = TemsirolimusModel(endpoints=("temsirolimus", "sirolimus")).predict(p, s)
    for e in ("temsirolimus", "sirolimus"):
        np.testing.assert_allclose(np.asarray(a[e]), np.asarray(b[e]), rtol=1e-9)


def test_closed_system_conserves_mass_and_matches_scipy():
    m = LinearSystemModel(
        "closed", ["a", "b", "c"], {"a->b": "kab", "b->a": "kba", "b->c": "kbc", "c->b": "kcb"},
        {"a": ("a", None), "b": ("b", None), "c": ("c", None)},
    )  # fmt: skip
    par = {"kab": 0.7, "kba": 0.2, "kbc": 0.05, "kcb": 0.01}
    times = np.array([0.5, 1.0, 3.0, 10.0, 50.0])
    s = subject([dict(TIME=0.0, AMT=10.0), dict(TIME=2.0, AMT=6.0, DUR=4.0)], times)
    out = m.predict(par, s)
    total = sum(np.asarray(out[k]) for k in "abc")
    np.testing.assert_allclose(
        total, np.where(times < 2, 10, 10 + 6 * np.clip((times - 2) / 4, 0, 1)), rtol=1e-10
    )
    K = np.asarray(m.matrix(par))

    def rhs(t, y):
        return K @ y + np.array([1.5 if 2 <= t < 6 else 0.0, 0, 0])

    sol = solve_ivp(rhs, (0, 50), [10.0, 0, 0], method="Radau", rtol=1e-11, atol=1e-13,
                    t_eval=times, max_step=0.5)  # fmt: skip
    for i, k in enumerate("abc"):
        np.testing.assert_allclose(np.asarray(out[k]), sol.y[i], rtol=1e-6)


def test_steady_state_bolus_equals_long_repeated_dosing():
    par = {"k10": 0.3, "k12": 0.2, "k21": 0.1, "v1": 10.0}
    ss = TWO.predict(par, subject([dict(TIME=0.0, AMT=5.0, SS=1, II=12.0)], [1.0, 6.0, 11.0]))[
        "conc"
    ]
    rows = [dict(TIME=12.0 * k, AMT=5.0) for k in range(200)]
    long = TWO.predict(par, subject(rows, [12 * 199 + 1.0, 12 * 199 + 6.0, 12 * 199 + 11.0]))[
        "conc"
    ]
    np.testing.assert_allclose(np.asarray(ss), np.asarray(long), rtol=1e-8)


def test_bad_definitions_are_named():
    with pytest.raises(ValueError, match="unknown compartment 'x'"):
        LinearSystemModel("m", ["a"], {"a->x": "k"}, {"a": ("a", "v")})
    with pytest.raises(ValueError, match="src->dst"):
        LinearSystemModel("m", ["a"], {"a": "k"}, {"a": ("a", "v")})
