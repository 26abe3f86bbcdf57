"""pkpd.pk.nonlinear: the ODE event engine against scipy's solve_ivp, closed forms and itself.

Model: one compartment with Michaelis-Menten elimination (pkpd.pk.nonlinear.one_cmt_mm),
dA/dt = -Vmax*C/(Km + C) + infusion, C = 1000*A/V ng/mL. Subjects are built as
:class:`pkpd.data.arrays.SubjectData` rows by hand. Jitted predictors are compiled once.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import pkpd  # noqa: F401  (enables float64 first)
from pkpd.data.arrays import SubjectData
from pkpd.pk.nonlinear import one_cmt_mm

REL_TOL = 1e-6
PARAMS = {"vmax": 10.0, "km": 500.0, "v": 50.0}


def make_subject(doses, points, n_dose_pad=1):
    """doses: (time, amt, rate, cmt, seq); points: (time, seq). Pads one masked dose."""
    d = list(doses) + [(doses[-1][0], 0.0, 0.0, 0, 0)] * n_dose_pad
    D, P = len(d), len(points)
    mask = np.array([True] * len(doses) + [False] * n_dose_pad)
    fields = {f.name: None for f in dataclasses.fields(SubjectData)}
    fields |= dict(
        dose_time=np.array([x[0] for x in d], float),
        dose_amt=np.array([x[1] for x in d], float),
        dose_rate=np.array([x[2] for x in d], float),
        dose_dur=np.zeros(D),
        dose_ii=np.zeros(D),
        dose_cmt=np.array([x[3] for x in d], np.int32),
        dose_ss=np.zeros(D, np.int32),
        dose_evid=np.where(mask, 1, 0).astype(np.int32),
        dose_seq=np.array([x[4] for x in d], np.int32),
        dose_segment=np.zeros(D, np.int32),
        dose_row=np.arange(D, dtype=np.int32),
        dose_mask=mask,
        dose_cov=np.zeros((D, 0)),
        point_time=np.array([p[0] for p in points], float),
        point_dv=np.full(P, np.nan),
        point_lloq=np.full(P, np.nan),
        point_endpoint=np.zeros(P, np.int32),
        point_cmt=np.zeros(P, np.int32),
        point_seq=np.array([p[1] for p in points], np.int32),
        point_segment=np.zeros(P, np.int32),
        point_row=np.arange(P, dtype=np.int32),
        point_blq=np.zeros(P, bool),
        point_mask=np.ones(P, bool),
        point_valid=np.ones(P, bool),
        point_cov=np.zeros((P, 0)),
        cov=np.zeros(0),
        study=np.array(0, np.int32),
    )
    return SubjectData(**fields)


# 100 mg bolus at 0 (CMT 1), 50 mg bolus at 12 h (CMT 0 = default), 80 mg at 40 mg/h from 24 h
# (2-h infusion). Points unsorted; one at 12 h recorded *before* the dose (seq 0 < 1) and one
# after it (seq 2); one at exactly the infusion end; padding repeats the last time.
DOSES = [(0.0, 100.0, 0.0, 1, 0), (12.0, 50.0, 0.0, 0, 1), (24.0, 80.0, 40.0, 1, 3)]
POINTS = [(30.0, 9), (0.0, 1), (12.0, 0), (12.0, 2), (1.0, 1), (26.0, 9), (25.0, 9), (5.0, 1),
          (48.0, 9), (48.0, 9)]  # fmt: skip
SUBJECT = make_subject(DOSES, POINTS)

predict = jax.jit(one_cmt_mm)
# the same engine with pkpd's own explicit solver and its adjoint (solver="dopri5")
SOLVERS = {
    "kvaerno5": (one_cmt_mm, predict),
    "dopri5": (
        functools.partial(one_cmt_mm, solver="dopri5"),
        jax.jit(functools.partial(one_cmt_mm, solver="dopri5")),
    ),
}


def scipy_reference(p, doses, points):
    """solve_ivp (Radau, rtol 1e-10, atol 1e-14) piecewise between events, NONMEM ordering."""
    events = sorted(doses, key=lambda d: (d[0], d[4]))
    infusions = [(d[0], d[0] + d[1] / d[2], d[2]) for d in events if d[2] > 0]
    breaks = sorted({d[0] for d in events} | {e for _, e, _ in infusions})

    def rhs(t, y):
        c = 1000.0 * y[0] / p["v"]
        rate = sum(r for s, e, r in infusions if s <= t < e)
        return [-p["vmax"] * c / (p["km"] + c) + rate]

    def state_at(t, seq):
        y, tc = np.array([0.0]), 0.0
        for b in [*breaks, np.inf]:
            stop = min(b, t)
            if stop > tc:
                sol = solve_ivp(rhs, (tc, stop), y, method="Radau", rtol=1e-10, atol=1e-14)
                y, tc = sol.y[:, -1], stop
            if b > t or b == np.inf:
                break
            for d in events:  # boluses at b that act on (t, seq)
                if d[0] == b and d[2] == 0 and (b < t or d[4] <= seq):
                    y = y + d[1]
        return 1000.0 * y[0] / p["v"]

    return np.array([state_at(t, s) for t, s in points])


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    keep = np.abs(b) > 1e-6 * np.abs(b).max()
    return float(np.max(np.abs(a[keep] - b[keep]) / np.abs(b[keep])))


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_boluses_and_infusion_match_scipy_with_nonmem_ordering(solver):
    model, predict = SOLVERS[solver]
    out, ok = predict(PARAMS, SUBJECT)
    ref = scipy_reference(PARAMS, DOSES, POINTS)
    assert bool(ok)
    err = rel_err(out["conc"], ref)
    assert err <= REL_TOL, f"max relative error {err:.2e}"
    conc = np.asarray(out["conc"])
    assert conc[1] == 2000.0  # t = 0, post-dose: 1000 * 100 / 50
    assert conc[3] - conc[2] > 999.0  # 12 h: seq 0 is pre-dose, seq 2 post-dose (+1000)
    assert conc[8] == conc[9]  # padded repeat


def linear_closed_form(cl, v, doses, points):
    k = cl / v
    out = []
    for t, seq in points:
        a = 0.0
        for td, amt, rate, _, dseq in doses:
            if rate == 0 and (t > td or (t == td and dseq <= seq)):
                a += amt * np.exp(-k * (t - td))
            elif rate > 0 and t > td:
                dur = amt / rate
                on = min(t - td, dur)
                a += rate / k * (1 - np.exp(-k * on)) * np.exp(-k * max(t - td - dur, 0.0))
        out.append(1000.0 * a / v)
    return np.array(out)


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_michaelis_menten_becomes_linear_as_km_grows(solver):
    model, predict = SOLVERS[solver]
    cl = 3.0
    km = 1e12  # C/Km <= 4e-9
    p = {"vmax": cl * km / 1000.0, "km": km, "v": 50.0}
    out, ok = predict(p, SUBJECT)
    assert bool(ok)
    ref = linear_closed_form(cl, 50.0, DOSES, POINTS)
    err = rel_err(out["conc"], ref)
    assert err <= REL_TOL, f"max relative error vs the linear closed form {err:.2e}"


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_unsupported_events_and_unmapped_compartments_set_ok_false(solver):
    model, predict = SOLVERS[solver]
    bad_rate = make_subject([(0.0, 100.0, -2.0, 1, 0)], POINTS)  # modelled duration
    bad_cmt = make_subject([(0.0, 100.0, 0.0, 2, 0)], POINTS)  # no compartment 2
    for subj in (bad_rate, bad_cmt):
        out, ok = predict(PARAMS, subj)
        assert not bool(ok)
        assert np.all(np.isfinite(np.asarray(out["conc"])))
    # no doses at all (all padding): zero concentration, ok
    empty = make_subject([(0.0, 0.0, 0.0, 1, 0)], POINTS)
    empty = dataclasses.replace(empty, dose_mask=np.zeros(2, bool))
    out, ok = predict(PARAMS, empty)
    assert bool(ok)
    np.testing.assert_array_equal(np.asarray(out["conc"]), 0.0)


def _stack(*subjects):
    return jax.tree_util.tree_map(lambda *xs: np.stack(xs), *subjects)


# Two identical 1-h infusions at 6 h (they add: 200 mg/h) after a 300 mg bolus; same D as SUBJECT.
SECOND_DOSES = [(0.0, 300.0, 0.0, 1, 0), (6.0, 100.0, 100.0, 1, 1), (6.0, 100.0, 100.0, 1, 1)]
SECOND = make_subject(SECOND_DOSES, POINTS)


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_vmap_and_grad_match_plain_calls_and_finite_differences(solver):
    model, predict = SOLVERS[solver]
    batch = _stack(SUBJECT, SECOND)
    pb = {k: jnp.array([v, 1.3 * v]) for k, v in PARAMS.items()}

    def loss(p, s):
        out, ok = model(p, s)
        return jnp.sum(jnp.log(out["conc"] + 1.0)), ok

    (vals, oks), grads = jax.jit(jax.vmap(jax.value_and_grad(loss, has_aux=True)))(pb, batch)
    assert np.all(np.asarray(oks))
    for i, subj in enumerate((SUBJECT, SECOND)):
        p = {k: float(v[i]) for k, v in pb.items()}
        out, _ = predict(p, subj)
        np.testing.assert_allclose(vals[i], np.sum(np.log(np.asarray(out["conc"]) + 1)), rtol=1e-10)
        for k in p:
            h = 1e-4 * p[k]
            up = np.sum(np.log(np.asarray(predict({**p, k: p[k] + h}, subj)[0]["conc"]) + 1))
            dn = np.sum(np.log(np.asarray(predict({**p, k: p[k] - h}, subj)[0]["conc"]) + 1))
            fd = (up - dn) / (2 * h)
            g = float(grads[k][i])
            assert np.isfinite(g) and abs(g - fd) <= 1e-4 * abs(fd) + 1e-7, (i, k, g, fd)
    # the two infusions of SECOND overlap exactly: double rate, same as scipy
    ref = scipy_reference({k: float(v[1]) for k, v in pb.items()}, SECOND_DOSES, POINTS)
    out, _ = predict({k: v[1] for k, v in pb.items()}, SECOND)
    assert rel_err(out["conc"], ref) <= REL_TOL


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_failed_solve_gives_ok_false_and_finite_values_under_jit_and_vmap(solver):
    model, predict = SOLVERS[solver]
    batch = _stack(SUBJECT, SUBJECT)
    pb = {k: jnp.array([v, v]) for k, v in PARAMS.items()}
    run = jax.jit(jax.vmap(lambda p, s: model(p, s, max_steps=3)))
    out, ok = run(pb, batch)
    assert not np.any(np.asarray(ok))
    assert np.all(np.isfinite(np.asarray(out["conc"])))
    # and the gradient of a failed solve is finite (the sampler rejects the draw by its -inf
    # log density; a NaN gradient must not reach it first)
    grad = jax.jit(jax.grad(lambda p: jnp.sum(model(p, SUBJECT, max_steps=3)[0]["conc"])))(PARAMS)
    assert all(np.isfinite(float(v)) for v in grad.values())
