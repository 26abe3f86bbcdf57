"""Parameters that change between occasions (inter-occasion variability) in the analytic engine,
against an independent reference: scipy's LSODA integrating the same compartments with the
parameters switched at each occasion's start and the amounts carried over."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

import pkpd
from pkpd.models import load_model
from pkpd.pk import analytic

#: Occasion 2 starts at an observation (30 h, mid-profile), occasion 3 at a dose (72 h).
STARTS = (0.0, 30.0, 72.0)
DOSES = [(0.0, 100.0), (24.0, 100.0), (48.0, 150.0), (72.0, 100.0)]  # (h, mg)
TIMES = [0.5, 2, 6, 12, 23, 26, 30, 36, 47, 50, 60, 71.9, 72, 73, 80, 96, 120]
#: Per occasion: every structural parameter moves.
TWO_CMT = dict(
    cl=[2.0, 3.5, 1.5], v1=[20.0, 25.0, 15.0], q=[1.0, 1.5, 0.7], v2=[30.0, 40.0, 35.0],
    ka=[1.2, 0.6, 2.0],
)  # fmt: skip


def occasion(t):
    return 1 + sum(t >= s for s in STARTS[1:])


def design(doses=DOSES, times=TIMES, extra=None, rate=0.0):
    recs = [dict(TIME=t, EVID=1, AMT=a, RATE=rate) for t, a in doses]
    recs += [dict(TIME=t, EVID=0, AMT=0.0, RATE=0.0) for t in times]
    recs += extra or []
    df = pd.DataFrame(recs).sort_values(["TIME", "EVID"], ascending=[True, False], kind="stable")
    df["OCC"] = [occasion(t) for t in df.TIME]
    df.insert(0, "ID", 1)
    df["DV"] = np.where(df.EVID == 0, 1.0, np.nan)
    return df.reset_index(drop=True)


def one_subject(df):
    pad = pkpd.read_dataset(df).to_arrays()
    return pad, jax.tree.map(lambda x: jnp.asarray(x[0]), pad.data)


def reference(params, rhs, n_states, dose_state, doses=DOSES, times=TIMES, resets=(), rate=0.0):
    """Amounts by LSODA between events; parameters of the occasion the interval lies in;
    ``resets``: times at which every amount is set to 0 before that time's doses."""
    infusions = [(t, t + a / rate, rate) for t, a in doses] if rate else []
    events = sorted(
        set([t for t, _ in doses] + list(STARTS) + list(times) + list(resets))
        | {e for _, e, _ in infusions}
    )
    a, t0, out = np.zeros(n_states), 0.0, {}
    for t in events:
        if t > t0:
            k = occasion(t0) - 1

            def f(s, y, k=k):
                r = sum(q for start, end, q in infusions if start <= s < end)
                dy = np.asarray(rhs(y, {n: v[k] for n, v in params.items()}), dtype=float)
                dy[dose_state] += r
                return dy

            for lo, hi in zip([t0] + [e for _, e, _ in infusions if t0 < e < t], [e for _, e, _ in infusions if t0 < e < t] + [t], strict=True):  # fmt: skip
                a = solve_ivp(f, (lo, hi), a, rtol=1e-11, atol=1e-12, method="LSODA").y[:, -1]
            t0 = t
        if t in resets:
            a = np.zeros(n_states)
        if not rate:
            for td, amt in doses:
                if td == t:
                    a[dose_state] += amt
        if t in times:
            out[t] = a.copy()
    return out


def two_cmt_oral_rhs(y, p):
    d, c, x = y
    return [
        -p["ka"] * d,
        p["ka"] * d - (p["cl"] + p["q"]) / p["v1"] * c + p["q"] / p["v2"] * x,
        p["q"] / p["v1"] * c - p["q"] / p["v2"] * x,
    ]


def test_two_compartment_oral_carries_amounts_across_occasions():
    _, sub = one_subject(design())
    got = jax.jit(load_model("two_cmt_oral").predict)(
        {k: jnp.asarray(v) for k, v in TWO_CMT.items()}, sub
    )
    ref = reference(TWO_CMT, two_cmt_oral_rhs, 3, 0)
    want = [1000 * ref[t][1] / TWO_CMT["v1"][occasion(t) - 1] for t in TIMES]
    np.testing.assert_allclose(np.asarray(got["conc"])[: len(TIMES)], want, rtol=1e-8)
    # drug from occasion 1 is still there in occasion 2: without carrying it the 36 h value
    # (12 h after the last occasion-1 dose) would be far lower than the reference
    amounts = np.asarray(
        jax.jit(load_model("two_cmt_oral").amounts)(
            {k: jnp.asarray(v) for k, v in TWO_CMT.items()}, sub
        )
    )
    np.testing.assert_allclose(amounts[TIMES.index(36)], ref[36], rtol=1e-8, atol=1e-9)


def test_constant_parameters_per_occasion_equal_the_plain_model():
    _, sub = one_subject(design())
    m = load_model("two_cmt_oral")
    same = {k: jnp.full(3, v[0]) for k, v in TWO_CMT.items()}
    plain = {k: jnp.asarray(v[0]) for k, v in TWO_CMT.items()}
    np.testing.assert_allclose(
        np.asarray(jax.jit(m.predict)(same, sub)["conc"]),
        np.asarray(jax.jit(m.predict)(plain, sub)["conc"]),
        rtol=1e-10,
    )  # fmt: skip


def test_infusions_and_a_reset_inside_an_occasion():
    """One-compartment IV infusions (2 h, ending before each occasion starts) and an EVID 3
    reset at 60 h: nothing is carried across the reset, doses after it still count."""
    reset = [dict(TIME=60.0, EVID=3, AMT=0.0, RATE=0.0)]
    df = design(extra=reset, rate=50.0)  # 100-150 mg at 50 mg/h: 2-3 h infusions
    _, sub = one_subject(df)
    params = dict(cl=[2.0, 4.0, 1.0], v=[20.0, 30.0, 25.0])
    got = jax.jit(load_model("one_cmt_iv").predict)(
        {k: jnp.asarray(v) for k, v in params.items()}, sub
    )
    ref = reference(
        params, lambda y, p: [-p["cl"] / p["v"] * y[0]], 1, 0, resets=(60.0,), rate=50.0
    )
    want = [1000 * ref[t][0] / params["v"][occasion(t) - 1] for t in TIMES]
    np.testing.assert_allclose(np.asarray(got["conc"])[: len(TIMES)], want, rtol=1e-8)


def test_propagator_is_the_matrix_exponential_even_when_ka_meets_a_pole():
    disp = analytic.disposition(2.0, 20.0, [1.0], [30.0])
    for ka in (1.3, float(disp.poles[0]), float(disp.poles[1])):
        poles, w = analytic.state_propagator(disp, ka)
        m = analytic.state_matrix(disp, ka)
        for u in (0.1, 5.0, 60.0):
            got = np.einsum("m,mij->ij", np.exp(-np.asarray(poles) * u), np.asarray(w))
            want = np.asarray(jax.scipy.linalg.expm(m * u))
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9 * np.abs(want).max())


def test_gradients_per_occasion_match_finite_differences():
    _, sub = one_subject(design())
    m = load_model("two_cmt_oral")
    base = {k: jnp.asarray(v) for k, v in TWO_CMT.items()}

    def total(cl):
        return jnp.sum(jnp.log(m.predict({**base, "cl": cl}, sub)["conc"][: len(TIMES)]))

    g = np.asarray(jax.jit(jax.grad(total))(base["cl"]))
    h = 1e-6
    value = jax.jit(total)
    fd = [
        (value(base["cl"].at[k].add(h)) - value(base["cl"].at[k].add(-h))) / (2 * h)
        for k in range(3)
    ]
    np.testing.assert_allclose(g, np.asarray(fd), rtol=1e-6)
    assert np.all(g != 0)  # each occasion's clearance acts on the data


def test_modelled_lag_with_occasion_parameters_is_refused():
    _, sub = one_subject(design())
    params = {k: jnp.asarray(v) for k, v in TWO_CMT.items()} | {"lag_depot": 0.5}
    with pytest.raises(ValueError, match="lag_depot"):
        load_model("two_cmt_oral").predict(params, sub)


def test_an_ode_model_switches_parameters_at_occasion_starts():
    from pkpd.models import ODEModel

    def rhs(t, y, p):
        c, x = y["central"], y["periph"]
        return {
            "depot": -p["ka"] * y["depot"],
            "central": p["ka"] * y["depot"]
            - (p["cl"] + p["q"]) / p["v1"] * c
            + p["q"] / p["v2"] * x,
            "periph": p["q"] / p["v1"] * c - p["q"] / p["v2"] * x,
        }

    model = ODEModel(
        name="ode_two_cmt_oral_occasions",
        states=("depot", "central", "periph"),
        params={"cl": "L/h", "v1": "L", "q": "L/h", "v2": "L", "ka": "1/h"},
        outputs={"conc": "ng/mL"},
        rhs=rhs,
        observe=lambda t, y, p: {"conc": 1000 * y["central"] / p["v1"]},
        doses={1: "depot"},
        concentrations={"conc": "v1"},
        rtol=1e-10,
        atol=1e-10,
    )
    assert model.occasion_parameters == ("cl", "v1", "q", "v2", "ka")
    _, sub = one_subject(design())
    got = jax.jit(model.predict)({k: jnp.asarray(v) for k, v in TWO_CMT.items()}, sub)
    assert bool(got["ok"])
    ref = reference(TWO_CMT, two_cmt_oral_rhs, 3, 0)
    want = [1000 * ref[t][1] / TWO_CMT["v1"][occasion(t) - 1] for t in TIMES]
    np.testing.assert_allclose(np.asarray(got["conc"])[: len(TIMES)], want, rtol=1e-6)
