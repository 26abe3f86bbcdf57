"""Temsirolimus with parameters per occasion (inter-occasion variability), against an
independent reference: scipy's Radau integrating the whole joint model (temsirolimus 2 cmt,
sirolimus, S6K effect site, VEGF and PD-1 turnover) with the parameters switched at each
occasion's start and every state carried over. Both the class and the same model written with
the public blocks (``from_blocks()``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

import pkpd
from pkpd.models.temsirolimus import MW_SIR, MW_TEM, TYPICAL, TemsirolimusModel, from_blocks
from pkpd.pk import analytic

#: Weekly 30-min infusions; occasion 2 starts at an observation in week 1 (drug of dose 1 is
#: carried into it), occasion 3 at the third dose.
DOSES = [(0.0, 25.0), (168.0, 75.0), (336.0, 25.0)]  # (h, mg)
STARTS = (0.0, 100.0, 336.0)
TIMES = [0.5, 2.0, 24.0, 99.0, 100.0, 101.0, 150.0, 168.5, 200.0, 335.0, 336.5, 400.0, 600.0]
DUR = 0.5
#: Per occasion: the PK, potency and the S6K effect site and potency move.
PER_OCCASION = dict(
    cl=[16.2, 24.0, 11.0],
    v1=[35.0, 28.0, 45.0],
    q=[8.7, 12.0, 6.0],
    v2=[137.0, 110.0, 160.0],
    fm=[0.36, 0.30, 0.45],
    cl_sir=[1.8, 2.6, 1.2],
    v_sir=[141.8, 120.0, 170.0],
    potency=[1.0, 0.7, 1.4],
    s6k_ke0=[0.03, 0.05, 0.02],
    s6k_ic50=[1.46, 2.5, 1.0],
)


def occasion(t):
    return 1 + sum(t >= s for s in STARTS[1:])


def subject():
    recs = [dict(TIME=t, EVID=1, AMT=a, DUR=DUR, DVID=0) for t, a in DOSES]
    recs += [dict(TIME=t, EVID=0, AMT=0.0, DUR=0.0, DVID=1) for t in TIMES]
    df = pd.DataFrame(recs).sort_values(["TIME", "EVID"], ascending=[True, False], kind="stable")
    df["OCC"] = [occasion(t) for t in df.TIME]
    df.insert(0, "ID", 1)
    df["DV"] = np.where(df.EVID == 0, 1.0, np.nan)
    pad = pkpd.read_dataset(df.reset_index(drop=True), model="temsirolimus").to_arrays()
    return jax.tree.map(lambda x: jnp.asarray(x[0]), pad.data)


def params():
    out = {k: jnp.asarray(v) for k, v in TYPICAL.items()}
    out.update({k: jnp.asarray(v) for k, v in PER_OCCASION.items()})
    return out


def reference():
    """Every endpoint at TIMES by Radau (rtol 1e-11), parameters of the occasion each
    interval lies in; infusions as a constant input between their start and end."""
    p0 = dict(TYPICAL)
    events = sorted(set(STARTS) | set(TIMES) | {t for t, _ in DOSES} | {t + DUR for t, _ in DOSES})
    y = np.array([0.0, 0.0, 0.0, 0.0, p0["vegf_base"], p0["pd1_base"]])
    out, t0 = {}, 0.0

    def rhs(s, y, p):
        a1, a2, asir, ce, r, pd1 = y
        rate = sum(a / DUR for t, a in DOSES if t <= s < t + DUR)
        k10, k12, k21 = p["cl"] / p["v1"], p["q"] / p["v1"], p["q"] / p["v2"]
        drv = 1e6 * a1 / (p["v1"] * MW_TEM) + p["potency"] * 1e6 * asir / (p["v_sir"] * MW_SIR)
        drv = max(drv, 0.0)
        iv = p["vegf_imax"] * drv / (p["vegf_ic50"] + drv)
        ip = p["pd1_imax"] * drv / (p["pd1_ic50"] + drv)
        kout_v = 1.0 / p["vegf_mrt"]
        kin_p = p["pd1_kout"] * p["pd1_base"] / (100.0 - p["pd1_base"])
        return [
            rate - (k10 + k12) * a1 + k21 * a2,
            k12 * a1 - k21 * a2,
            p["fm"] * k10 * a1 * MW_SIR / MW_TEM - p["cl_sir"] / p["v_sir"] * asir,
            p["s6k_ke0"] * (drv - ce),
            p["vegf_base"] * kout_v * (1 - iv) - kout_v * r,
            kin_p * (1 - ip) * (100.0 - pd1) - p["pd1_kout"] * pd1,
        ]

    for t in events:
        if t > t0:
            k = occasion(t0) - 1
            p = {**p0, **{n: v[k] for n, v in PER_OCCASION.items()}}
            y = solve_ivp(rhs, (t0, t), y, args=(p,), method="Radau", rtol=1e-11, atol=1e-13).y[
                :, -1
            ]
            t0 = t
        if t in TIMES:
            k = occasion(t) - 1
            p = {**p0, **{n: v[k] for n, v in PER_OCCASION.items()}}
            a1, _, asir, ce, r, pd1 = y
            hill = p["s6k_hill"]
            occ = max(ce, 0.0) ** hill / (p["s6k_ic50"] ** hill + max(ce, 0.0) ** hill)
            out[t] = dict(
                temsirolimus=1000 * a1 / p["v1"],
                sirolimus=1000 * asir / p["v_sir"],
                s6k=100 * (1 - p["s6k_imax"] * occ),
                vegf=r,
                pd1_cd8=pd1,
            )
    return out


def model(build):
    """The class, or the same model written with the public blocks
    (:func:`pkpd.models.temsirolimus.from_blocks`: its closed-form occasion path)."""
    return TemsirolimusModel() if build == "class" else from_blocks()


@pytest.fixture(
    scope="module",
    params=[(b, k) for b in ("class", "blocks") for k in ("all kinds", "a fit's kinds")],
    ids=lambda p: "-".join(p),
)
def predicted(request):
    """As predicted for any data, and as a fit predicts (told the data hold infusions only,
    the VEGF/PD-1 driver then comes from the per-occasion recurrence on the grid)."""
    build, kinds = request.param
    m = model(build)
    if kinds == "a fit's kinds":
        m = m.with_dose_kinds((analytic.INFUSION,))
    return jax.jit(m.predict)(params(), subject())


@pytest.fixture(scope="module")
def ref():
    return reference()


@pytest.mark.parametrize(
    "endpoint,rtol",
    # the PK and the effect site are closed forms (Sylvester's propagator across boundaries);
    # VEGF and PD-1 come from the grid integrator (1e-5 at typical values, class docstring)
    [("temsirolimus", 1e-7), ("sirolimus", 1e-7), ("s6k", 1e-7), ("vegf", 5e-5), ("pd1_cd8", 5e-5)],
)
def test_every_endpoint_carries_its_states_across_occasions(predicted, ref, endpoint, rtol):
    assert bool(predicted["ok"])
    got = np.asarray(predicted[endpoint])[: len(TIMES)]
    want = np.array([ref[t][endpoint] for t in TIMES])
    np.testing.assert_allclose(got, want, rtol=rtol)


def test_drug_of_an_earlier_occasion_is_carried(predicted, ref):
    """At 101 h (occasion 2, no dose in it yet) all temsirolimus and sirolimus is what dose 1
    left: without carrying it the prediction would be 0."""
    i = TIMES.index(101.0)
    assert ref[101.0]["sirolimus"] > 1.0
    assert float(predicted["sirolimus"][i]) == pytest.approx(ref[101.0]["sirolimus"], rel=1e-7)


@pytest.mark.parametrize("build", ["class", "blocks"])
def test_constant_parameters_per_occasion_equal_the_plain_model(build):
    sub = subject()
    plain = {k: jnp.asarray(v) for k, v in TYPICAL.items()}
    same = dict(plain, cl=jnp.full(3, TYPICAL["cl"]), s6k_ke0=jnp.full(3, TYPICAL["s6k_ke0"]))
    m = model(build)
    a, b = jax.jit(m.predict)(same, sub), jax.jit(m.predict)(plain, sub)
    for e in ("temsirolimus", "sirolimus", "s6k"):
        np.testing.assert_allclose(np.asarray(a[e]), np.asarray(b[e]), rtol=1e-8)
    for e in ("vegf", "pd1_cd8"):  # the occasion starts add grid nodes: integrator error only
        np.testing.assert_allclose(np.asarray(a[e]), np.asarray(b[e]), rtol=2e-5)


@pytest.mark.parametrize("build", ["class", "blocks"])
def test_gradient_per_occasion_matches_finite_differences(build):
    sub = subject()
    m = model(build).with_endpoints(("temsirolimus", "sirolimus", "s6k"))
    base = {k: v for k, v in params().items() if k in m.parameters}

    def total(cl):
        out = m.predict({**base, "cl": cl}, sub)
        return sum(jnp.sum(jnp.log(out[e][: len(TIMES)])) for e in m.endpoints)

    g = np.asarray(jax.jit(jax.grad(total))(base["cl"]))
    h = 1e-5
    value = jax.jit(total)
    fd = [
        (value(base["cl"].at[k].add(h)) - value(base["cl"].at[k].add(-h))) / (2 * h)
        for k in range(3)
    ]
    np.testing.assert_allclose(g, np.asarray(fd), rtol=1e-5)
    assert np.all(g != 0)


def test_turnover_parameters_per_occasion_are_refused():
    m = TemsirolimusModel()
    assert "cl" in m.occasion_parameters and "vegf_mrt" not in m.occasion_parameters
    bad = dict(params(), vegf_mrt=jnp.asarray([91.0, 80.0, 100.0]))
    with pytest.raises(ValueError, match="vegf_mrt"):
        m.predict(bad, subject())
    assert TemsirolimusModel(binding=True, endpoints=("temsirolimus",)).occasion_parameters == ()


def test_the_adaptive_pd_solver_switches_occasions_too(ref):
    """pd_solver="diffrax" (the bundled data's generator) takes the same occasion-aware driver."""
    m = TemsirolimusModel(
        endpoints=("vegf", "pd1_cd8"), pd_solver="diffrax", rtol=1e-10, atol=1e-10
    )
    p = {k: v for k, v in params().items() if k in m.parameters}
    got = jax.jit(m.predict)(p, subject())
    assert bool(got["ok"])
    for e in m.endpoints:
        want = np.array([ref[t][e] for t in TIMES])
        np.testing.assert_allclose(np.asarray(got[e])[: len(TIMES)], want, rtol=1e-7)
