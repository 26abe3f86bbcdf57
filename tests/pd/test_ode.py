"""pkpd.ode.solve against scipy's solve_ivp, and its jit / vmap / grad / failure behaviour.

Reference problem: a two-state model with saturable (Michaelis-Menten) elimination from state 1,
linear exchange with state 2 and a zero-order input switched on over [1, 3) h:

    y1' = -vmax*y1/(km + y1) - k12*y1 + k21*y2 + rate*[1 <= t < 3]
    y2' =  k12*y1 - k21*y2

Compile time dominates these tests, so each jitted function is built once (module level) and
reused; problem sizes are tiny.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import pkpd  # noqa: F401  (enables float64 first)
from pkpd.ode import solve

PARAMS = {"vmax": 2.0, "km": 0.5, "k12": 0.3, "k21": 0.1, "rate": 4.0}
Y0 = np.array([1.0, 0.0])
JUMPS = np.array([1.0, 3.0])
# Unsorted, with an output at a jump time and repeated padding entries at the end.
T_EVAL = np.array([5.0, 0.0, 0.5, 3.0, 12.0, 1.0, 2.0, 12.0, 12.0])
REL_TOL = 1e-6


def field(t, y, p):
    inp = jnp.where((t >= 1.0) & (t < 3.0), p["rate"], 0.0)
    elim = p["vmax"] * y[0] / (p["km"] + y[0])
    return jnp.stack(
        [-elim - p["k12"] * y[0] + p["k21"] * y[1] + inp, p["k12"] * y[0] - p["k21"] * y[1]]
    )


def scipy_reference(p, y0, t_eval, t0=0.0):
    """solve_ivp (rtol 1e-10, atol 1e-14) piecewise between the input's switch times."""

    def rhs_factory(inp):
        def rhs(t, y):
            elim = p["vmax"] * y[0] / (p["km"] + y[0])
            return [
                -elim - p["k12"] * y[0] + p["k21"] * y[1] + inp,
                p["k12"] * y[0] - p["k21"] * y[1],
            ]

        return rhs

    t1 = max(t_eval.max(), 3.0)
    pieces = [(t0, 1.0, 0.0), (max(t0, 1.0), 3.0, p["rate"]), (max(t0, 3.0), t1, 0.0)]
    out = np.full((len(t_eval), 2), np.nan)
    y = np.array(y0, float)
    for a, b, inp in pieces:
        if b <= a:
            continue
        last = b == pieces[-1][1]
        sel = (t_eval >= a) & ((t_eval < b) | (last & (t_eval <= b)))
        sol = solve_ivp(
            rhs_factory(inp), (a, b), y, method="DOP853", rtol=1e-10, atol=1e-14,
            dense_output=False, t_eval=np.unique(np.r_[t_eval[sel], b]),
        )  # fmt: skip
        ts = sol.t
        for i in np.nonzero(sel)[0]:
            out[i] = sol.y[:, np.searchsorted(ts, t_eval[i])]
        y = sol.y[:, -1]
    return out


@functools.cache
def jitted(solver):
    @jax.jit
    def run(p, y0, t0):
        return solve(field, y0, p, t_eval=T_EVAL, jump_ts=JUMPS, t0=t0, solver=solver)

    return run


def max_rel_err(a, b):
    return float(np.max(np.abs(np.asarray(a) - b) / np.abs(b)))


@pytest.mark.parametrize("solver", ["kvaerno5", "tsit5"])
def test_matches_scipy_with_unsorted_padded_times_and_jumps(solver):
    ys, ok = jitted(solver)(PARAMS, Y0, 0.0)
    ref = scipy_reference(PARAMS, Y0, T_EVAL)
    assert bool(ok)
    assert ys.shape == (len(T_EVAL), 2)
    mask = ref != 0.0  # state 2 is exactly 0 at t = 0
    err = float(np.max(np.abs(np.asarray(ys)[mask] - ref[mask]) / np.abs(ref[mask])))
    assert err <= REL_TOL, f"{solver}: max relative error {err:.2e}"
    np.testing.assert_allclose(ys[1], Y0, rtol=0, atol=0)  # t = 0 gives y0 exactly
    np.testing.assert_array_equal(ys[4], ys[7])  # padded repeats are identical
    np.testing.assert_array_equal(ys[4], ys[8])


def test_plain_call_equals_jit():
    plain, ok_plain = solve(field, Y0, PARAMS, t_eval=T_EVAL, jump_ts=JUMPS)
    jit, ok_jit = jitted("kvaerno5")(PARAMS, Y0, 0.0)
    assert bool(ok_plain) and bool(ok_jit)
    np.testing.assert_allclose(plain, jit, rtol=1e-12, atol=0)


def test_times_before_t0_get_y0_and_zero_length_solve():
    ys, ok = jitted("kvaerno5")(PARAMS, Y0, 2.0)
    assert bool(ok)
    before = T_EVAL <= 2.0
    np.testing.assert_array_equal(np.asarray(ys)[before], np.broadcast_to(Y0, (before.sum(), 2)))
    ref = scipy_reference(PARAMS, Y0, T_EVAL[~before], t0=2.0)
    assert max_rel_err(np.asarray(ys)[~before], ref) <= REL_TOL
    # every output at t0: diffrax's t0 == t1 path, all y0
    ys, ok = jitted("kvaerno5")(PARAMS, Y0, 20.0)
    assert bool(ok)
    np.testing.assert_array_equal(ys, np.broadcast_to(Y0, ys.shape))


def _loss(p):
    ys, ok = solve(field, Y0, p, t_eval=T_EVAL, jump_ts=JUMPS)
    # a smooth scalar of every output, weighted so no output cancels another
    return jnp.sum(ys * jnp.arange(1, ys.size + 1).reshape(ys.shape) / ys.size), ok


BATCH = {
    "vmax": np.array([2.0, 0.5, 8.0]),
    "km": np.array([0.5, 2.0, 0.05]),
    "k12": np.array([0.3, 0.1, 1.0]),
    "k21": np.array([0.1, 0.3, 0.05]),
    "rate": np.array([4.0, 1.0, 10.0]),
}


def test_vmap_grad_matches_loop_and_finite_differences():
    batched = jax.jit(jax.vmap(jax.value_and_grad(_loss, has_aux=True)))
    (vals, oks), grads = batched(BATCH)
    assert np.all(np.asarray(oks))
    run = jitted("kvaerno5")
    for i in range(3):
        p = {k: v[i] for k, v in BATCH.items()}
        ys, _ = run(p, Y0, 0.0)
        w = np.arange(1, ys.size + 1).reshape(ys.shape) / ys.size
        np.testing.assert_allclose(vals[i], np.sum(np.asarray(ys) * w), rtol=1e-12)
        ref = scipy_reference(p, Y0, T_EVAL)
        mask = ref != 0
        assert np.max(np.abs(np.asarray(ys)[mask] / ref[mask] - 1)) <= REL_TOL
        for k in p:
            g = float(grads[k][i])
            assert np.isfinite(g)
            h = 1e-5 * abs(p[k])
            up = np.sum(np.asarray(run({**p, k: p[k] + h}, Y0, 0.0)[0]) * w)
            dn = np.sum(np.asarray(run({**p, k: p[k] - h}, Y0, 0.0)[0]) * w)
            fd = (up - dn) / (2 * h)
            assert abs(g - fd) <= 1e-5 * max(abs(fd), 1e-3), (k, i, g, fd)


def stiff_field(t, y, k):
    return -k * (y - jnp.cos(t))


def _stiff(k):
    # An explicit solver with a small step budget: fine for k = 1 (~400 steps), fails for k = 1e5 (stiff).
    ys, ok = solve(
        stiff_field, jnp.array([1.0]), k, t_eval=jnp.linspace(0.0, 10.0, 5), solver="tsit5",
        max_steps=1000,
    )  # fmt: skip
    return ys, ok


def test_failed_solve_is_flagged_finite_and_differentiable_under_jit_and_vmap():
    ks = jnp.array([1.0, 1e5])
    ys, ok = jax.jit(jax.vmap(_stiff))(ks)
    assert np.asarray(ok).tolist() == [True, False]
    assert np.all(np.isfinite(np.asarray(ys)))
    np.testing.assert_array_equal(ys[1], 1.0)  # placeholder: y0
    # the successful member is unaffected by its failing neighbour
    t = np.linspace(0.0, 10.0, 5)
    exact = (np.cos(t) + np.sin(t)) / 2 + np.exp(-t) / 2  # y' = -(y - cos t), y(0) = 1
    np.testing.assert_allclose(ys[0, :, 0], exact, rtol=1e-6)
    grads = jax.jit(jax.vmap(jax.grad(lambda k: _stiff(k)[0].sum())))(ks)
    assert np.all(np.isfinite(np.asarray(grads)))
    # and no exception without jit either
    ys1, ok1 = _stiff(jnp.asarray(1e5))
    assert not bool(ok1) and np.all(np.isfinite(np.asarray(ys1)))


def test_unknown_solver_and_bad_t_eval_raise():
    with pytest.raises(ValueError, match="kvaerno5"):
        solve(field, Y0, PARAMS, t_eval=T_EVAL, solver="rk99")
    with pytest.raises(ValueError, match="one-dimensional"):
        solve(field, Y0, PARAMS, t_eval=np.zeros((2, 2)))


# -- pkpd.ode.solve_pieces: the explicit Dormand-Prince solver with its own adjoint -------------
def _bateman(p, kicks, a, b):
    """Depot -> central -> out in closed form: the state at each piece end ``b[j]`` after the
    kicks (doses) at ``a[0..j]`` (``kicks[j]``: [depot, central] added at ``a[j]``)."""
    ka, k = p["ka"], p["k"]
    out = []
    for j in range(len(b)):
        depot = central = 0.0
        for i in range(j + 1):
            dt = b[j] - a[i]
            d0, c0 = kicks[i][0], kicks[i][1]
            depot = depot + d0 * jnp.exp(-ka * dt)
            central = (
                central
                + c0 * jnp.exp(-k * dt)
                + d0 * ka / (ka - k) * (jnp.exp(-k * dt) - jnp.exp(-ka * dt))
            )
        out.append(jnp.stack([depot, central]))
    return jnp.stack(out)


def _depot_central(t, y, p):
    return jnp.stack([-p["ka"] * y[0], p["ka"] * y[0] - p["k"] * y[1]])


# an oral dose at 0, an IV bolus and a second oral dose at 6 h, a zero-length piece (an output
# at the dose time), outputs at 2, 6, 12 and 48 h
PIECE_A = np.array([0.0, 2.0, 6.0, 6.0, 12.0])
PIECE_B = np.array([2.0, 6.0, 6.0, 12.0, 48.0])
KICKS = np.array([[100.0, 0.0], [0.0, 0.0], [50.0, 20.0], [0.0, 0.0], [0.0, 0.0]])


def test_solve_pieces_matches_the_closed_form_and_its_gradient():
    from pkpd.ode import solve_pieces

    p = {"ka": 1.3, "k": 0.2}
    kw = dict(rtol=1e-10, atol=1e-12)
    # the first dose is the initial state (y0 at a[0]); the later ones are kicks
    ends, ok = jax.jit(
        lambda p: solve_pieces(
            _depot_central, KICKS[0], p, PIECE_A, PIECE_B, np.vstack([[0.0, 0.0], KICKS[1:]]), **kw
        )  # fmt: skip
    )(p)
    assert bool(ok)
    exact = _bateman(p, KICKS, PIECE_A, PIECE_B)
    np.testing.assert_allclose(np.asarray(ends), np.asarray(exact), rtol=1e-8, atol=1e-9)
    # the zero-length piece at 6 h holds the state just after that time's kick
    np.testing.assert_allclose(np.asarray(ends[2] - ends[1]), KICKS[2], rtol=1e-12)

    def loss_num(p, kicks):
        ends, _ = solve_pieces(_depot_central, kicks[0], p, PIECE_A, PIECE_B,
                               kicks.at[0].set(0.0), **kw)  # fmt: skip
        return jnp.sum(jnp.sin(ends / 10.0))

    def loss_exact(p, kicks):
        return jnp.sum(jnp.sin(_bateman(p, kicks, PIECE_A, PIECE_B) / 10.0))

    kicks = jnp.asarray(KICKS)
    g_num = jax.jit(jax.grad(loss_num, argnums=(0, 1)))(p, kicks)
    g_exact = jax.grad(loss_exact, argnums=(0, 1))(p, kicks)
    for name in p:
        assert float(g_num[0][name]) == pytest.approx(float(g_exact[0][name]), rel=1e-7), name
    np.testing.assert_allclose(np.asarray(g_num[1]), np.asarray(g_exact[1]), rtol=1e-7, atol=1e-12)
    # under vmap the lanes take different steps and still match their own closed forms
    pb = {"ka": jnp.array([1.3, 0.4]), "k": jnp.array([0.2, 0.05])}
    gb = jax.jit(jax.vmap(jax.grad(loss_num), in_axes=(0, None)))(pb, kicks)
    for i in range(2):
        pi = {k: v[i] for k, v in pb.items()}
        ge = jax.grad(loss_exact)(pi, kicks)
        for name in p:
            assert float(gb[name][i]) == pytest.approx(float(ge[name]), rel=1e-7), (i, name)


def test_solve_pieces_that_run_out_of_steps_fail_finite():
    from pkpd.ode import solve_pieces

    p = {"ka": 1.3, "k": 0.2}
    kicks = np.vstack([[0.0, 0.0], KICKS[1:]])
    ends, ok = solve_pieces(_depot_central, KICKS[0], p, PIECE_A, PIECE_B, kicks, max_steps=5)
    assert not bool(ok)
    np.testing.assert_array_equal(np.asarray(ends), np.broadcast_to(KICKS[0], (5, 2)))
    g = jax.grad(
        lambda p: jnp.sum(
            solve_pieces(_depot_central, KICKS[0], p, PIECE_A, PIECE_B, kicks, max_steps=5)[0]
        )  # fmt: skip
    )(p)
    assert all(float(v) == 0.0 for v in g.values())
