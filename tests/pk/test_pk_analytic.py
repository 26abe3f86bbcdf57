"""Analytic PK engine against independent references (tight ``solve_ivp``, closed forms) and
invariants (linearity, superposition, mass balance, non-negativity, grad, jit/vmap)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

import pkpd
from pkpd.models import load_model
from pkpd.models.library import LIBRARY as MODELS  # the generic linear models' engines
from pkpd.pk import analytic


def engine(name):
    """The closed-form engine (:class:`pkpd.models.LinearPKModel`) of a registered linear
    model; the registered model is built from a PK block on top of it (checked below)."""
    return MODELS[name]


PARAMS = {
    "one_cmt_iv": {"cl": 2.0, "v": 15.0},
    "one_cmt_oral": {"cl": 1.1, "v": 20.0, "ka": 1.5},
    "two_cmt_iv": {"cl": 3.0, "v1": 10.0, "q": 2.0, "v2": 30.0},
    "two_cmt_oral": {"cl": 3.0, "v1": 10.0, "q": 2.0, "v2": 30.0, "ka": 0.8},
    "three_cmt_iv": {"cl": 3.0, "v1": 10.0, "q": 2.0, "v2": 30.0, "q2": 0.7, "v3": 50.0},
    "three_cmt_oral": {
        "cl": 3.0,
        "v1": 10.0,
        "q": 2.0,
        "v2": 30.0,
        "q2": 0.7,
        "v3": 50.0,
        "ka": 1.2,
    },
}
GRID = np.round(np.arange(0.0, 120.0 + 1e-9, 0.5), 10)


# -------------------------------------------------------------------------------------------
# Helpers: data, an independent ODE reference
# -------------------------------------------------------------------------------------------
def dose(time, amt, *, cmt=1, rate=0.0, dur=0.0, ii=0.0, addl=0, ss=0, evid=1, **cov):
    return dict(TIME=float(time), EVID=evid, AMT=float(amt), CMT=cmt, RATE=float(rate),
                DUR=float(dur), II=float(ii), ADDL=addl, SS=ss, **cov)  # fmt: skip


def padded_for(subjects: dict, times=GRID):
    """Padded data for ``{id: [dose records]}``, with EVID 2 prediction rows at ``times``
    (placed after same-time dose records, so predictions there are post-dose)."""
    rows = []
    for sid, doses in subjects.items():
        recs = [dict(d, ID=sid, _k=0) for d in doses]
        recs += [dict(ID=sid, TIME=float(t), EVID=2, AMT=0.0, CMT=0, _k=1) for t in times]
        recs.sort(key=lambda r: (r["TIME"], r["_k"]))
        rows += recs
    df = pd.DataFrame(rows).drop(columns="_k")
    for c in ("RATE", "DUR", "II", "ADDL", "SS"):
        df[c] = df[c].fillna(0.0)
    cov = [c for c in df.columns if c.startswith("X")]
    for c in cov:
        df[c] = df[c].fillna(0.0)
    df["DV"] = np.nan
    return pkpd.read_dataset(df).to_arrays()


def one_subject(doses, times=GRID):
    padded = padded_for({1: doses}, times)
    return jax.tree.map(lambda x: x[0], padded.data)


DMAX, PMAX = 16, 256
_MOD_DEFAULTS = {"lag": 0.0, "f": 1.0, "dur": 1.0, "rate": 1.0}


def fixed_shape(sub, D=DMAX, P=PMAX):
    """Pad one subject to ``D`` doses and ``P`` points with the data layer's padding
    conventions (inactive doses: amt 0, evid 0, mask False), so one compilation serves all."""
    out = {}
    for f in dataclasses.fields(sub):
        if getattr(sub, f.name) is None:  # optional fields (pairs)
            out[f.name] = None
            continue
        x = np.asarray(getattr(sub, f.name))
        if f.name.startswith(("dose_", "point_")):
            n = D if f.name.startswith("dose_") else P
            extra = n - x.shape[0]
            assert extra >= 0, f"raise {'DMAX' if n == D else 'PMAX'}"
            if f.name in ("dose_time", "point_time"):
                fill = x[-1]
            elif f.name in ("dose_row", "point_row", "point_endpoint"):
                fill = -1
            elif f.name in ("point_dv", "point_lloq"):
                fill = np.nan
            else:
                fill = 0
            pad = np.full((extra,) + x.shape[1:], fill, dtype=x.dtype)
            x = np.concatenate([x, pad])
        out[f.name] = x
    return type(sub)(**out)


@functools.cache
def compiled(name):
    model = engine(name)
    return jax.jit(lambda p, s: (model.amounts(p, s), model.predict(p, s)["conc"]))


def full_params(model, p):
    out = {k: float(v) for k, v in p.items()}
    for m in model.modifier_parameters:
        out.setdefault(m, _MOD_DEFAULTS[m.split("_")[0]])
    return out


def run(name, params, doses, times=GRID):
    """(amounts [P, states], conc [P]) from the jit-compiled model on fixed shapes."""
    times = np.asarray(times)
    sub = fixed_shape(one_subject(doses, times))
    a, c = compiled(name)(full_params(engine(name), params), sub)
    return np.asarray(a)[: times.size], np.asarray(c)[: times.size]


def rate_matrix(name, p):
    """dA/dt = K A in the model's compartment order, written from the ODEs (not the engine)."""
    m = engine(name)
    n = m.n_compartments
    v1 = p["v"] if n == 1 else p["v1"]
    periph = [(p["q"], p["v2"])] if n >= 2 else []
    if n == 3:
        periph.append((p["q2"], p["v3"]))
    off = 1 if m.absorption else 0
    K = np.zeros((off + n, off + n))
    c = off
    if m.absorption:
        K[0, 0] = -p["ka"]
        K[c, 0] = p["ka"]
    K[c, c] -= p["cl"] / v1
    for j, (q, vp) in enumerate(periph):
        pi = c + 1 + j
        K[c, c] -= q / v1
        K[c, pi] += q / vp
        K[pi, c] += q / v1
        K[pi, pi] -= q / vp
    return K


def ode_amounts(K, boluses, infusions, times, x0=None, t0=None):
    """Amounts at ``times`` by piecewise LSODA (rtol 1e-10, atol 1e-13), boluses applied before
    same-time points. ``boluses``: (t, state, amount); ``infusions``: (t_on, t_off, state, rate)."""
    nstate = K.shape[0]
    times = np.asarray(times, dtype=float)
    starts = [b[0] for b in boluses] + [i[0] for i in infusions]
    t0 = min(starts + [times.min()]) if t0 is None else t0
    bps = sorted({t0, times.max(), *starts, *[i[1] for i in infusions]})
    bps = [b for b in bps if t0 <= b <= times.max()]
    x = np.zeros(nstate) if x0 is None else np.array(x0, dtype=float)
    out = np.full((len(times), nstate), np.nan)
    for j, a in enumerate(bps):
        for tb, s, amt in boluses:
            if tb == a:
                x[s] += amt
        out[times == a] = x
        if j + 1 == len(bps):
            break
        b = bps[j + 1]
        u = np.zeros(nstate)
        for ton, toff, s, r in infusions:
            if ton <= a < toff:
                u[s] += r
        inside = (times > a) & (times < b)
        t_eval = np.concatenate([times[inside], [b]])
        sol = solve_ivp(lambda t, y, u=u: K @ y + u, (a, b), x, method="LSODA", t_eval=t_eval,
                        rtol=1e-10, atol=1e-13, jac=lambda t, y: K)  # fmt: skip
        assert sol.success, sol.message
        out[inside] = sol.y[:, :-1].T
        x = sol.y[:, -1].copy()
    return out


def ode_events(model, params, doses, n_ss=None):
    """Expand NONMEM dose records into ODE boluses/infusions (F, lag, ADDL, SS as long
    repeated dosing of ``n_ss`` past doses); returns (boluses, infusions)."""
    comp = {v: k for k, v in model.compartments.items()}
    off = 1  # compartment number -> state index
    boluses, infusions = [], []
    for d in doses:
        number = d["CMT"] or model.default_dose_compartment
        cname = model.compartments[number]
        f = params.get(f"f_{cname}", 1.0)
        lag = params.get(f"lag_{cname}", 0.0)
        state = comp[cname] - off
        times = [d["TIME"] + k * d["II"] for k in range(d["ADDL"] + 1)]
        if d["SS"]:
            times = [d["TIME"] - k * d["II"] for k in range(n_ss, 0, -1)] + times
        famt = f * d["AMT"]
        for t in times:
            t = t + lag
            if d["RATE"] > 0:
                infusions.append((t, t + famt / d["RATE"], state, d["RATE"]))
            elif d["RATE"] == -1:
                r = params[f"rate_{cname}"]
                infusions.append((t, t + famt / r, state, r))
            elif d["RATE"] == -2:
                T = params[f"dur_{cname}"]
                infusions.append((t, t + T, state, famt / T))
            elif d["DUR"] > 0:
                infusions.append((t, t + d["DUR"], state, famt / d["DUR"]))
            else:
                boluses.append((t, state, famt))
    return boluses, infusions


def n_for_steady_state(K, tau):
    lam_min = np.min(-np.linalg.eigvals(K).real)
    return int(np.ceil(40.0 / (lam_min * tau))) + 2


def assert_close(got, ref, rtol=1e-6, floor=1e-6, label=""):
    got, ref = np.asarray(got), np.asarray(ref)
    assert np.all(np.isfinite(got)), label
    peak = np.max(np.abs(ref), axis=0)
    sel = np.abs(ref) > floor * peak
    rel = np.abs(got - ref)[sel] / np.abs(ref)[sel]
    assert rel.max() <= rtol, f"{label}: max rel err {rel.max():.3g}"


def central_index(model):
    return model.central_compartment - 1


# -------------------------------------------------------------------------------------------
# Scenarios (dose records + modifiers) compared with the ODE
# -------------------------------------------------------------------------------------------
def scenarios(model):
    oral = model.absorption
    central = model.central_compartment
    dflt = model.default_dose_compartment
    mods_default = (
        {"f_depot": 0.7, "lag_depot": 0.5} if oral else {"f_central": 0.8, "lag_central": 0.25}
    )
    multiple = [dose(0, 50, cmt=dflt, ii=12, addl=4)]
    if oral:
        multiple.append(dose(30, 20, cmt=central))
    infusions = [
        dose(0, 100, cmt=central, rate=20),
        dose(24, 80, cmt=central, dur=2),
        dose(48, 60, cmt=central, rate=-2),
        dose(72, 45, cmt=central, rate=-1),
    ]
    if oral:
        infusions.append(dose(96, 40, cmt=1, rate=40))
    return {
        "single_bolus_lag_f": ([dose(0, 100, cmt=dflt)], mods_default),
        "multiple_doses_addl": (multiple, {}),
        "infusions_rate_dur_modelled": (
            infusions,
            {"f_central": 0.9, "lag_central": 0.7, "dur_central": 3.0, "rate_central": 15.0},
        ),
        "ss_bolus_lag": ([dose(0, 100, cmt=dflt, ii=12, addl=2, ss=1)], mods_default),
        "ss_infusion_longer_than_ii": (
            [dose(0, 100, cmt=central, rate=4, ii=8, addl=3, ss=1)],
            {"f_central": 0.8, "lag_central": 1.5},
        ),
        "ss2_on_top_of_bolus": (
            [dose(0, 100, cmt=dflt), dose(24, 50, cmt=central, ii=12, addl=1, ss=2)],
            {},
        ),
    }


CASES = [(name, sc) for name in MODELS for sc in scenarios(MODELS[name])]


@pytest.mark.parametrize(("name", "scenario"), CASES)
def test_against_solve_ivp(name, scenario):
    model = engine(name)
    doses, mods = scenarios(model)[scenario]
    params = PARAMS[name] | mods
    K = rate_matrix(name, params)
    n_ss = n_for_steady_state(K, max(d["II"] for d in doses) or 1.0)
    # by linearity, dose record by dose record; a steady-state record (its past doses as long
    # repeated dosing) acts from its record time on (SS=2 adds the steady state at that time)
    ref = 0.0
    for d in doses:
        bol, inf = ode_events(model, params, [d], n_ss=n_ss)
        part = ode_amounts(K, bol, inf, GRID)
        ref = ref + np.where((GRID >= d["TIME"])[:, None] | (d["SS"] == 0), part, 0.0)
    got, conc = run(name, params, doses)
    assert_close(got, ref, label=f"{name}/{scenario} amounts")
    v1 = params.get("v", params.get("v1"))
    assert_close(conc, 1000 * ref[:, central_index(model)] / v1, label=f"{name}/{scenario} conc")


@pytest.mark.parametrize("name", ["one_cmt_oral", "three_cmt_iv"])
def test_ss_constant_infusion_then_decay(name):
    """SS=1, AMT 0, RATE R: the constant-infusion steady state at the record, then decay
    (NONMEM's behaviour in the reference tables)."""
    p = PARAMS[name]
    K = rate_matrix(name, p)
    u = np.zeros(K.shape[0])
    u[0] = 10.0
    x_ss = np.linalg.solve(K, -u)
    times = GRID + 5.0
    ref = ode_amounts(K, [], [], times, x0=x_ss, t0=5.0)
    got, _ = run(name, p, [dose(5, 0, cmt=1, rate=10, ss=1)], times)
    assert_close(got, ref, label=name)


# -------------------------------------------------------------------------------------------
# Closed forms and limits
# -------------------------------------------------------------------------------------------
def test_one_cmt_closed_forms_plain_call():
    cl, v, ka = 1.1, 20.0, 1.5
    k = cl / v
    t = GRID
    sub = one_subject([dose(0, 100, cmt=1)])
    got = engine("one_cmt_oral").predict({"cl": cl, "v": v, "ka": ka}, sub)["conc"]
    ref = 1000 * 100 * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    got = engine("one_cmt_iv").predict({"cl": cl, "v": v}, sub)["conc"]
    np.testing.assert_allclose(got, 1000 * 100 / v * np.exp(-k * t), rtol=1e-13)


def test_degenerate_ka_equal_to_elimination():
    """ka = CL/V exactly: the confluent limit F·D·ka·t·exp(-k t)/V, to better than 1e-8."""
    cl, v = 1.1, 20.0
    k = cl / v
    t = GRID
    doses = [dose(0, 100, cmt=1)]
    conc = lambda ka: run("one_cmt_oral", {"cl": cl, "v": v, "ka": ka}, doses)[1]  # noqa: E731
    ref = 1000 * 100 * k * t * np.exp(-k * t) / v
    # the split poles' residues are ~1/h apart-scaled and cancel at t = 0: rounding leaves
    # ~eps/h of the profile's scale there (1.5e-8 ng/mL against a 1,300 ng/mL peak, depending
    # on XLA's summation order), so the absolute floor is relative to the peak
    np.testing.assert_allclose(conc(k), ref, rtol=1e-8, atol=1e-10 * ref.max())
    for eps in (1e-7, -3e-6, 2e-5):  # just inside and outside the confluent window
        np.testing.assert_allclose(conc(k * (1 + eps)), ref, rtol=2e-4, atol=1e-10 * ref.max())
    model = engine("one_cmt_oral")
    sub = fixed_shape(one_subject(doses))
    f = jax.jit(lambda ka: model.predict({"cl": cl, "v": v, "ka": ka}, sub)["conc"][: t.size].sum())
    g = jax.grad(f)(k)
    fd = (f(k * (1 + 1e-4)) - f(k * (1 - 1e-4))) / (2e-4 * k)
    assert np.isfinite(g) and abs(g - fd) <= 1e-4 * abs(fd)


def test_degenerate_ka_equal_to_a_two_cmt_pole():
    name = "two_cmt_oral"
    p = dict(PARAMS[name])
    K = rate_matrix(name, p)
    beta = np.sort(-np.linalg.eigvals(K[1:, 1:]).real)[0]
    p["ka"] = float(beta)
    K = rate_matrix(name, p)
    ref = ode_amounts(K, [(0.0, 0, 100.0)], [], GRID)
    got, _ = run(name, p, [dose(0, 100, cmt=1)])
    assert_close(got, ref, label="ka = beta")


def test_three_cmt_poles_match_numpy_eigenvalues():
    rng = np.random.default_rng(1)
    for _ in range(20):
        cl, v1, q, v2, q2, v3 = np.exp(rng.normal(0, 1.5, 6))
        d = analytic.disposition(cl, v1, [q, q2], [v2, v3])
        K = rate_matrix("three_cmt_iv", dict(cl=cl, v1=v1, q=q, v2=v2, q2=q2, v3=v3))
        ev = np.sort(-np.linalg.eigvals(K).real)[::-1]
        np.testing.assert_allclose(np.asarray(d.poles), ev, rtol=1e-9)


@pytest.mark.parametrize("name", ["one_cmt_oral", "two_cmt_iv", "three_cmt_oral"])
def test_steady_state_is_the_limit_of_long_repeated_dosing(name):
    model = engine(name)
    lag = {"lag_depot": 2.0} if model.absorption else {"lag_central": 2.0}
    p = PARAMS[name] | lag | {"dur_central": 30.0}
    tau = 12.0
    n = n_for_steady_state(rate_matrix(name, p), tau)
    t_last = (n - 1) * tau
    times = t_last + GRID[:80]
    for d in (dose(0, 100), dose(0, 100, cmt=model.central_compartment, rate=-2)):  # bolus;
        # infusion longer than II by a modelled duration (RATE=-2)
        long = [d | {"II": tau, "ADDL": n - 1}]
        ss = [d | {"TIME": t_last, "II": tau, "SS": 1}]
        long_sub = jax.tree.map(lambda x: x[0], padded_for({1: long}, times).data)
        got_long = jax.jit(model.predict)(full_params(model, p), long_sub)["conc"]  # D = n
        np.testing.assert_allclose(run(name, p, ss, times)[1], got_long, rtol=1e-9)


# -------------------------------------------------------------------------------------------
# Invariants
# -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(MODELS))
def test_dose_linearity_and_superposition(name):
    model = engine(name)
    doses, mods = scenarios(model)["infusions_rate_dur_modelled"]
    p = PARAMS[name] | mods
    whole = run(name, p, doses)[0]
    scaled = [d | {"AMT": 2.5 * d["AMT"]} for d in doses]
    # RATE>0 keeps the rate and lengthens the infusion: scale it too, and the modelled rate
    scaled = [d | ({"RATE": 2.5 * d["RATE"]} if d["RATE"] > 0 else {}) for d in scaled]
    p_scaled = p | {"rate_central": 2.5 * p["rate_central"]}
    np.testing.assert_allclose(run(name, p_scaled, scaled)[0], 2.5 * whole, rtol=1e-12, atol=1e-12)
    parts = sum(run(name, p, [d])[0] for d in doses)
    np.testing.assert_allclose(parts, whole, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["two_cmt_oral", "three_cmt_iv"])
def test_mass_balance(name):
    """Amount in the body + amount eliminated (CL·AUC) = amount dosed (F·AMT)."""
    model = engine(name)
    doses, mods = scenarios(model)["infusions_rate_dur_modelled"]
    p = PARAMS[name] | mods
    t_end = 130.0
    c = model.central_compartment
    dosed = sum(p["f_central"] * d["AMT"] if d["CMT"] == c else d["AMT"] for d in doses)
    bol, inf = ode_events(model, p, doses)
    breaks = [b[0] for b in bol] + [i[0] for i in inf] + [i[1] for i in inf]
    edges = np.unique(np.concatenate([[0.0, t_end], breaks, np.arange(0, t_end, 2.0)]))
    # AUC by 20-point Gauss-Legendre on each piece (smooth within pieces), in PMAX chunks
    x, w = np.polynomial.legendre.leggauss(20)
    a, b = edges[:-1], edges[1:]
    nodes = (0.5 * (b - a)[:, None] * x[None, :] + 0.5 * (a + b)[:, None]).ravel()
    weights = (0.5 * (b - a)[:, None] * w[None, :]).ravel()
    conc = np.concatenate(
        [run(name, p, doses, np.sort(nodes[i : i + PMAX]))[1] for i in range(0, nodes.size, PMAX)]
    )
    order = np.concatenate(
        [np.argsort(nodes[i : i + PMAX]) + i for i in range(0, nodes.size, PMAX)]
    )
    auc = float(np.sum(weights[order] * conc))  # ng·h/mL
    body = float(np.sum(run(name, p, doses, [t_end])[0][0]))
    eliminated = p["cl"] * auc / 1000.0
    np.testing.assert_allclose(body + eliminated, dosed, rtol=1e-9)


@pytest.mark.parametrize("name", list(MODELS))
def test_non_negative_for_random_regimens(name):
    model = engine(name)
    rng = np.random.default_rng(7)
    for _ in range(3):
        doses = []
        for _ in range(4):
            kind = rng.integers(3)
            cmt = int(rng.integers(1, 3)) if model.absorption else 1
            t = float(np.round(rng.uniform(0, 100), 2))
            amt = float(rng.uniform(1, 100))
            if kind == 0:
                doses.append(dose(t, amt, cmt=cmt))
            elif kind == 1:
                doses.append(dose(t, amt, cmt=cmt, rate=float(rng.uniform(1, 50))))
            else:
                doses.append(dose(t, amt, cmt=cmt, ii=float(rng.uniform(4, 24)), addl=2, ss=2))
        doses.sort(key=lambda d: d["TIME"])
        lag = {f"lag_{c}": float(rng.uniform(0, 5)) for c in model.dose_compartment_names}
        a = run(name, PARAMS[name] | lag, doses)[0]
        assert np.all(np.isfinite(a))
        assert a.min() >= -1e-12 * a.max()


@pytest.mark.parametrize("name", ["two_cmt_oral", "three_cmt_oral"])
def test_grad_matches_finite_differences(name):
    model = engine(name)
    times = np.array([0.9, 2.7, 7.1, 13.3, 25.9, 40.2, 61.7, 90.1])
    doses = [
        dose(0, 100, cmt=1, ii=24, addl=2),
        dose(5, 60, cmt=2, rate=-2, ii=12, addl=1, ss=2),
        dose(50, 30, cmt=2, rate=10),
    ]
    sub = fixed_shape(one_subject(doses, times), P=times.size)
    p0 = PARAMS[name] | {"lag_depot": 0.4, "f_depot": 0.8, "f_central": 0.9, "lag_central": 1.1,
                         "dur_central": 15.0}  # fmt: skip

    @jax.jit
    def loss(p):
        return jnp.sum(jnp.log(model.predict(p, sub)["conc"]))

    g = jax.jit(jax.grad(loss))({k: jnp.asarray(v) for k, v in p0.items()})
    for k, v in p0.items():
        h = 1e-6 * abs(v)
        fd = (float(loss(p0 | {k: v + h})) - float(loss(p0 | {k: v - h}))) / (2 * h)
        assert np.isfinite(g[k]), k
        assert abs(float(g[k]) - fd) <= 1e-5 * max(abs(fd), 1e-3), (k, float(g[k]), fd)


def test_jit_vmap_equal_plain_calls_and_padding_contributes_nothing():
    model = engine("one_cmt_oral")
    regimens = {
        1: [dose(0, 100, cmt=1, ii=12, addl=3)],
        2: [dose(0, 50, cmt=2, rate=25), dose(10, 40, cmt=1, ii=8, addl=1, ss=1)],
        3: [dose(3, 20, cmt=1), dose(4, 0, evid=3, cmt=0), dose(6, 30, cmt=2, rate=-2)],
    }
    padded = padded_for(regimens)
    p = PARAMS["one_cmt_oral"] | {"dur_central": 2.0, "lag_depot": 0.3}
    batched = jax.jit(jax.vmap(lambda s: model.predict(p, s)["conc"]))(padded.data)
    assert np.asarray(padded.data.dose_mask).sum(axis=1).tolist() == [4, 3, 3]
    for i, sid in enumerate(regimens):
        # plain (eager) call on the subject alone, with its own padding to 4 doses
        alone = model.predict(p, fixed_shape(one_subject(regimens[sid]), D=4, P=GRID.size))["conc"]
        np.testing.assert_allclose(batched[i], alone, rtol=1e-13, atol=1e-13)
    # subject 3: the reset at 4 h clears the 3 h dose
    c3 = np.asarray(batched[2])
    assert c3[GRID == 3.5][0] > 0 and c3[GRID == 5.0][0] == 0


def test_per_dose_modifiers_read_on_each_dose_record():
    """lag/F given per dose event (``[D]``): each dose uses its own record's values, and
    ADDL doses those of their record."""
    model = engine("one_cmt_iv")
    doses = [dose(0, 100, XLAG=1.0, XF=0.5), dose(24, 100, XLAG=3.0, XF=1.0, ii=24, addl=1)]
    padded = padded_for({1: doses})
    sub = fixed_shape(jax.tree.map(lambda x: x[0], padded.data))
    k = {c: i for i, c in enumerate(padded.covariates)}
    p = PARAMS["one_cmt_iv"] | {
        "lag_central": sub.dose_cov[:, k["XLAG"]],
        "f_central": sub.dose_cov[:, k["XF"]],
    }
    got = jax.jit(model.predict)(p, sub)["conc"][: GRID.size]
    kel = 2.0 / 15.0
    ref = sum(
        np.where(GRID >= t, 1000 * f * 100 / 15 * np.exp(-kel * np.clip(GRID - t, 0, None)), 0)
        for t, f in [(1.0, 0.5), (27.0, 1.0), (51.0, 1.0)]
    )
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


# -------------------------------------------------------------------------------------------
# Errors a person can act on
# -------------------------------------------------------------------------------------------
def test_errors():
    with pytest.raises(
        ValueError, match=r"unknown model 'one_cmpt'; known models: one_cmt_iv, one_cmt_oral"
    ):
        load_model("one_cmpt")
    model = engine("two_cmt_iv")
    sub = one_subject([dose(0, 100)])
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) v.*missing parameter\(s\) v1"):
        model.predict({"cl": 1.0, "v": 1.0, "q": 1.0, "v2": 2.0}, sub)
    # one value per occasion needs data with occasions; other shapes are refused
    with pytest.raises(ValueError, match="given per occasion, but the subject's data have no"):
        model.predict({"cl": jnp.ones(3), "v1": 1.0, "q": 1.0, "v2": 2.0}, sub)
    with pytest.raises(ValueError, match="must be a scalar for one subject, or one value per"):
        model.predict({"cl": jnp.ones((2, 3)), "v1": 1.0, "q": 1.0, "v2": 2.0}, sub)
    with pytest.raises(ValueError, match="one value per dose event"):
        model.predict(PARAMS["two_cmt_iv"] | {"lag_central": jnp.ones(7)}, sub)
    bad = fixed_shape(one_subject([dose(0, 100, cmt=2)]))
    assert "doses into compartment(s) [2]" in model.check_subject(bad)[0]
    conc = jax.jit(model.predict)(PARAMS["two_cmt_iv"], bad)["conc"]
    assert np.all(np.isnan(np.asarray(conc)[1 : GRID.size]))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_registered_model_is_its_pk_block_on_this_engine(name):
    """The six registered linear models are composed from a PK block (pkpd.models.blocks), the
    same way a user builds one; the block picks these closed forms and predicts exactly what
    they do, dose modifiers included."""
    from pkpd.models import BlockModel

    model, eng = load_model(name), engine(name)
    assert isinstance(model, BlockModel) and model.engine == "analytic"
    assert model.compartments == eng.compartments
    assert model.structural_parameters == eng.structural_parameters
    assert model.parameters == eng.parameters and model.all_parameters == eng.all_parameters
    assert model.dose_compartment_names == eng.dose_compartment_names
    cmt = 2 if eng.absorption else 1
    sub = fixed_shape(one_subject([dose(0, 100), dose(12, 50, cmt=cmt, rate=25.0), dose(30, 80)]))
    params = PARAMS[name] | {f"lag_{eng.dose_compartment_names[0]}": 0.3, "f_central": 0.8}
    got = np.asarray(model.predict(params, sub)["conc"])
    want = np.asarray(eng.predict(params, sub)["conc"])
    np.testing.assert_array_equal(got, want)


def test_model_metadata():
    m = engine("two_cmt_oral")
    assert m.compartments == {1: "depot", 2: "central", 3: "peripheral"}
    assert m.parameters["cl"] == "L/h" and m.parameters["ka"] == "1/h"
    assert m.parameters["lag_central"] == "h" and m.parameters["rate_depot"] == "mg/h"
    assert engine("three_cmt_iv").structural_parameters == ("cl", "v1", "q", "v2", "q2", "v3")
    assert engine("one_cmt_iv").compartments == {1: "central"}
    assert hash(m) == hash(engine("two_cmt_oral"))


def test_pole_response_fast_path_equals_the_general_formula():
    """Data without steady-state doses use only the bolus/infusion formulas: same values."""
    from pkpd.pk.analytic import BOLUS, INFUSION, pole_response

    rng = np.random.default_rng(4)
    n = 400
    lam = rng.uniform(0.01, 3.0, n)
    s = rng.uniform(-5.0, 50.0, n)
    amount = rng.uniform(1.0, 100.0, n)
    dur = rng.uniform(0.1, 4.0, n)
    kind = rng.choice([BOLUS, INFUSION], n)
    rate = np.where(kind == INFUSION, amount / dur, 0.0)
    dur = np.where(kind == INFUSION, dur, 0.0)
    tau = np.ones(n)
    full = pole_response(lam, s, amount, rate, dur, tau, kind)
    fast = pole_response(lam, s, amount, rate, dur, tau, kind, (BOLUS, INFUSION))
    np.testing.assert_array_equal(np.asarray(full), np.asarray(fast))
    inf = kind == INFUSION
    only = pole_response(lam[inf], s[inf], amount[inf], rate[inf], dur[inf], tau[inf],
                         kind[inf], (INFUSION,))  # fmt: skip
    np.testing.assert_array_equal(np.asarray(full)[inf], np.asarray(only))


def test_kinds_in_data():
    from pkpd.pk.analytic import BOLUS, INFUSION, kinds_in_data

    def kinds(rows):
        df = pd.DataFrame(rows)
        return kinds_in_data(pkpd.read_dataset(df).to_arrays().data)

    obs = dict(ID=1, TIME=1.0, EVID=0, AMT=0, DV=1.0)
    assert kinds([dict(ID=1, TIME=0, EVID=1, AMT=10, DV=np.nan), obs]) == (BOLUS,)
    inf = dict(ID=1, TIME=0, EVID=1, AMT=10, RATE=5, DV=np.nan)
    assert kinds([inf, obs]) == (INFUSION,)
    bol2 = dict(ID=1, TIME=0.5, EVID=1, AMT=10, RATE=0, DV=np.nan)
    assert kinds([inf, bol2, obs]) == (BOLUS, INFUSION)
    ss = dict(ID=1, TIME=0, EVID=1, AMT=10, SS=1, II=12, DV=np.nan)
    assert kinds([ss, obs]) is None
