r"""The ODE layer shared by nonlinear PK and turnover PD: one diffrax solve, jit/vmap/grad safe.

Everything that integrates an ODE in pkpd goes through :func:`solve`. It wraps
:func:`diffrax.diffeqsolve` with the settings a population sampler needs:

* a stiff-capable default solver (:class:`diffrax.Kvaerno5`, an L-stable ESDIRK method of
  order 5; turnover PD with fast ``kout`` and saturable PK are stiff), with
  :class:`diffrax.Tsit5` as the explicit option (``solver="tsit5"``) for non-stiff problems;
* adaptive steps (:class:`diffrax.PIDController`) wrapped in
  :class:`diffrax.ClipStepSizeController` whose ``step_ts`` are the output times (the solver
  steps exactly onto them: Kvaerno5's dense output is a cubic Hermite interpolant whose error
  is not controlled, so interpolated outputs would be ~1e-7 off where the steps are ~1e-9);
* restarts at ``jump_ts``, the times at which the vector field is discontinuous (dose times,
  infusion ends, a driver PK that jumps at a bolus): the interval is split there and solved
  piece by piece (one compiled solve inside :func:`jax.lax.scan`), each piece ending one ulp
  before its jump and the next starting one ulp after it, so no step straddles or evaluates a
  discontinuity. This is diffrax's ``jump_ts`` idea made explicit; diffrax 0.7's own
  ``jump_ts`` combined with ``step_ts`` was seen to stall just after a jump;
* output at arbitrary, unsorted, possibly repeated times (padded points repeat the last real
  time): the times are sorted for :class:`diffrax.SaveAt`, then put back in the caller's order;
* ``throw=False``: a failed solve never raises (under ``vmap`` inside NUTS one bad draw must
  not kill the chain). The solver status becomes a boolean ``ok``; the values of a failed solve
  are replaced by finite placeholders (the initial state), so nothing downstream sees inf/NaN
  and gradients stay finite. The inference layer turns ``ok=False`` into a ``-inf`` log density.

Gradients use diffrax's default :class:`diffrax.RecursiveCheckpointAdjoint`
(discretise-then-optimise: exact gradients of the numerical solution, memory
:math:`O(\sqrt{\text{max\_steps}})` checkpoints).

Tolerances: the defaults ``rtol=1e-8``, ``atol=1e-12`` (in the state's own units, e.g. mg or
% or pg/mL) give agreement with a tight ``scipy.integrate.solve_ivp`` reference to better than
1e-6 relative in float64 for states above ~1e-6 of their peak (the absolute tolerance
dominates below that); models whose states are tiny in these units should rescale or pass a
smaller ``atol``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import diffrax
import equinox.internal as eqxi
import jax
import jax.numpy as jnp

__all__ = [
    "solve",
    "solve_piece",
    "solve_pieces",
    "make_solver",
    "DEFAULT_RTOL",
    "DEFAULT_ATOL",
    "DEFAULT_MAX_STEPS",
]

DEFAULT_RTOL = 1e-8
DEFAULT_ATOL = 1e-12
DEFAULT_MAX_STEPS = 4096

_SOLVER_NAMES = ("kvaerno5", "tsit5")


def make_solver(solver: str | diffrax.AbstractSolver) -> diffrax.AbstractSolver:
    """A diffrax solver from a name (``"kvaerno5"``, ``"tsit5"``), or a solver passed through.

    ``"kvaerno5"`` keeps diffrax's default chord iteration for the implicit stages. (A full
    Newton iteration, :class:`optimistix.Newton`, was tried: it halved the steps on strongly
    nonlinear logit-scale turnover but stalled on a plain linear effect compartment with
    ``ke0 = 1000``, so the default stays.)
    """
    if isinstance(solver, diffrax.AbstractSolver):
        return solver
    name = str(solver).lower()
    if name == "kvaerno5":
        return diffrax.Kvaerno5()
    if name == "tsit5":
        return diffrax.Tsit5()
    raise ValueError(
        f"solver={solver!r} is not known; use one of {list(_SOLVER_NAMES)} "
        "or pass a diffrax.AbstractSolver instance"
    )


def solve(
    vector_field: Callable[[Any, jax.Array, Any], jax.Array],
    y0: jax.Array,
    args: Any = None,
    *,
    t_eval: jax.Array,
    jump_ts: jax.Array | None = None,
    t0: float | jax.Array = 0.0,
    t1: float | jax.Array | None = None,
    solver: str | diffrax.AbstractSolver = "kvaerno5",
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    max_steps: int = DEFAULT_MAX_STEPS,
) -> tuple[jax.Array, jax.Array]:
    r"""Solve :math:`\dot y = f(t, y, \text{args})`, :math:`y(t_0) = y_0`, at the times ``t_eval``.

    Parameters
    ----------
    vector_field
        ``f(t, y, args) -> dy/dt`` with the shape of ``y0``; a pure JAX function.
    y0
        Initial state ``[n]`` at ``t0``.
    args
        Any pytree handed to ``vector_field`` (parameters); differentiable.
    t_eval
        Output times ``[P]``, any order, repeats allowed (padding). Times before ``t0`` are
        clipped to ``t0`` (they get ``y0``).
    jump_ts
        Times ``[J]`` where ``f`` is discontinuous in ``t`` (dose and infusion-end times);
        any order, repeats and times outside ``[t0, t1]`` allowed.
    t0, t1
        Start and end of integration; ``t1`` defaults to ``max(t_eval)`` (never less than
        ``t0``).
    solver
        ``"kvaerno5"`` (default, stiff), ``"tsit5"`` (explicit) or a diffrax solver.
    rtol, atol
        Relative and absolute tolerances of the PID step-size controller.
    max_steps
        Step budget; exhausting it is a failure (``ok=False``), never an exception.

    Returns
    -------
    ys : Array ``[P, n]``
        The solution at ``t_eval`` in the caller's order. Where the solve failed, ``y0``
        repeated (finite, so gradients and downstream code stay NaN-free).
    ok : bool Array ``[]``
        True when diffrax reports success and every output is finite.

    Examples
    --------
    >>> import pkpd, jax.numpy as jnp
    >>> from pkpd.ode import solve
    >>> ys, ok = solve(lambda t, y, k: -k * y, jnp.array([1.0]), 0.5, t_eval=jnp.array([2.0, 0.0]))
    >>> bool(ok), [round(float(v), 8) for v in ys[:, 0]]
    (True, [0.36787944, 1.0])
    """
    y0 = jnp.asarray(y0)
    if not jnp.issubdtype(y0.dtype, jnp.floating):
        y0 = y0.astype(jnp.result_type(float))  # float64 under pkpd's x64 setting
    dtype = y0.dtype
    t_eval = jnp.asarray(t_eval, dtype=dtype)
    t0 = jnp.asarray(t0, dtype=dtype)
    if t_eval.ndim != 1:
        raise ValueError(f"t_eval must be one-dimensional [P]; got shape {t_eval.shape}")

    ts = jnp.maximum(t_eval, t0)
    order = jnp.argsort(ts)
    ts_sorted = ts[order]
    t_end = jnp.maximum(ts_sorted[-1], t0) if t1 is None else jnp.maximum(t1, t0)
    ts_sorted = jnp.minimum(ts_sorted, t_end)

    def piece(y_start, a, b, ts_piece):
        return solve_piece(vector_field, y_start, args, a, b, ts_piece, solver=solver,
                           rtol=rtol, atol=atol, max_steps=max_steps)  # fmt: skip

    if jump_ts is None:
        ys_sorted, _, ok = piece(y0, t0, t_end, ts_sorted)
    else:
        # Restart the solver at every jump: integrate [t0, j1), (j1, j2), ..., (jJ, t_end]
        # as separate solves (one compiled solve in a scan). Each piece stops one ulp before
        # its jump and the next starts one ulp after it, so the vector field is never
        # evaluated on the wrong side of a discontinuity (diffrax's own `jump_ts` does the
        # same inside one solve, but combined with `step_ts` it can stall at a jump).
        jumps = jnp.sort(jnp.clip(jnp.asarray(jump_ts, dtype=dtype).reshape(-1), t0, t_end))
        starts = jnp.concatenate([t0[None], jumps])
        ends = jnp.concatenate([jumps, t_end[None]])
        n = starts.shape[0]
        is_first = jnp.arange(n) == 0
        is_last = jnp.arange(n) == n - 1

        def body(carry, x):
            y, acc, ok = carry
            s, e, first, last = x
            a = jnp.where(first, s, jnp.minimum(jnp.nextafter(s, jnp.inf), e))
            b = jnp.maximum(jnp.where(last, e, jnp.nextafter(e, -jnp.inf)), a)
            ys_piece, y_end, ok_piece = piece(y, a, b, ts_sorted)
            inside = (first | (ts_sorted >= s)) & (last | (ts_sorted < e))
            acc = jnp.where(inside[:, None], ys_piece, acc)
            return (y_end, acc, ok & ok_piece), None

        acc0 = jnp.broadcast_to(y0, (ts_sorted.shape[0],) + y0.shape)
        (_, ys_sorted, ok), _ = jax.lax.scan(
            body, (y0, acc0, jnp.asarray(True)), (starts, ends, is_first, is_last)
        )
    ys = jnp.empty_like(ys_sorted).at[order].set(ys_sorted)
    return _finite_cotangent(ys), ok


def solve_piece(
    vector_field: Callable[[Any, jax.Array, Any], jax.Array],
    y_start: jax.Array,
    args: Any,
    a: jax.Array,
    b: jax.Array,
    ts: jax.Array,
    *,
    solver: str | diffrax.AbstractSolver = "kvaerno5",
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    max_steps: int = DEFAULT_MAX_STEPS,
    adjoint: diffrax.AbstractAdjoint | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One diffeqsolve from ``y_start`` at ``a`` to ``b`` (``f`` continuous in between): the
    states at ``ts`` clipped to ``[a, b]`` (``[P, n]``; ``ts`` sorted), the state at ``b`` and
    ``ok``. The building block of :func:`solve` and of the dose-event loop of
    :func:`pkpd.pk.nonlinear.predict_ode`; where the solve failed, the outputs are ``y_start``
    (finite)."""
    save = jnp.concatenate([jnp.clip(ts, a, b), b[None]])
    # step_ts: step exactly onto every output time. Kvaerno5's dense output is a cubic Hermite
    # interpolant whose error the controller does not control (~1e-7 relative where the steps
    # are ~1e-9); stepping onto the outputs costs at most P extra steps.
    controller = diffrax.ClipStepSizeController(
        diffrax.PIDController(rtol=rtol, atol=atol), step_ts=save
    )
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field), make_solver(solver), t0=a, t1=b, dt0=None, y0=y_start,
        args=args, saveat=diffrax.SaveAt(ts=save), stepsize_controller=controller,
        max_steps=max_steps, throw=False,
        adjoint=diffrax.RecursiveCheckpointAdjoint() if adjoint is None else adjoint,
    )  # fmt: skip
    ok = (sol.result == diffrax.RESULTS.successful) & jnp.all(jnp.isfinite(sol.ys))
    # Placeholder where failed: the piece's start state, finite. (Selecting with `where` gives
    # the failed values a zero cotangent, so no inf/NaN reaches the gradient.)
    ys = jnp.where(ok, sol.ys, jnp.broadcast_to(y_start, sol.ys.shape))
    return ys[:-1], ys[-1], ok


@jax.custom_vjp
def _finite_cotangent(x):
    """Identity whose backward pass zeroes non-finite cotangents.

    The implicit solvers' backward pass runs linear solves that raise on non-finite input
    (lineax, unconditionally), so a NaN produced downstream of the solve (say in a likelihood
    at an extreme parameter draw) would abort a whole sampler run instead of giving that draw a
    useless gradient. Zeroing it keeps the run alive; the draw is rejected by its log density.
    """
    return x


def _finite_cotangent_fwd(x):
    return x, None


def _finite_cotangent_bwd(_, g):
    return (jnp.where(jnp.isfinite(g), g, 0.0),)


_finite_cotangent.defvjp(_finite_cotangent_fwd, _finite_cotangent_bwd)


# -- an explicit adaptive solver through a whole event history, with its own discrete adjoint --

# Dormand & Prince (1980), "A family of embedded Runge-Kutta formulae", J. Comput. Appl. Math.
# 6:19-26: the 5(4) pair with first-same-as-last (Hairer, Norsett & Wanner, Solving ODEs I,
# table II.5.2). _DP_B is the 5th-order solution (also the last stage's row); _DP_E = b - b*.
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
_DP_E = (
    35 / 384 - 5179 / 57600,
    0.0,
    500 / 1113 - 7571 / 16695,
    125 / 192 - 393 / 640,
    -2187 / 6784 + 92097 / 339200,
    11 / 84 - 187 / 2100,
    -1 / 40,
)


def _combine(y, h, coefs, ks):
    acc = None
    for c, k in zip(coefs, ks, strict=True):
        if c != 0.0:
            acc = c * k if acc is None else acc + c * k
    return y if acc is None else y + h * acc


def _dopri_step(f, t, y, h, args, k1):
    """One Dormand-Prince 5(4) step from ``(t, y)`` with ``k1 = f(t, y)``: ``(y_new, err,
    f(t + h, y_new))``."""
    ks = [k1]
    for i in range(1, 6):
        ks.append(f(t + _DP_C[i] * h, _combine(y, h, _DP_A[i], ks), args))
    y_new = _combine(y, h, _DP_B, ks)
    ks.append(f(t + h, y_new, args))
    err = _combine(jnp.zeros_like(y), h, _DP_E, ks)
    return y_new, err, ks[6]


def _dopri_map(f, t, y, h, args):
    """A step as a map of ``(y, args)`` at a fixed ``(t, h)``: what the adjoint differentiates."""
    return _dopri_step(f, t, y, h, args, f(t, y, args))[0]


def _rms(x, y, y_new, rtol, atol):
    scale = atol + rtol * jnp.maximum(jnp.abs(y), jnp.abs(y_new))
    return jnp.sqrt(jnp.mean((x / scale) ** 2))


def _dopri_forward(f, y0, args, a, b, kicks, rtol, atol, max_steps):
    n_pieces = a.shape[0]
    dtype = y0.dtype
    f0 = f(a[0], y0, args)
    d0 = _rms(y0, y0, y0, rtol, atol)
    d1 = _rms(f0, y0, y0, rtol, atol)
    # Hairer, Norsett & Wanner's first guess (Solving ODEs I, II.4), without its second stage
    h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / jnp.maximum(d1, 1e-300))
    m = max_steps
    carry0 = dict(
        j=jnp.asarray(0), t=a[0], y=y0, h=h0.astype(dtype), k1=f0, tries=jnp.asarray(0),
        n=jnp.asarray(0), ybuf=jnp.zeros((m,) + y0.shape, dtype), tbuf=jnp.zeros(m, dtype),
        hbuf=jnp.zeros(m, dtype), jbuf=jnp.zeros(m, jnp.int32),
        ends=jnp.zeros((n_pieces,) + y0.shape, dtype),
    )  # fmt: skip

    def cond(c):
        return (c["j"] < n_pieces) & (c["tries"] < 4 * m) & (c["n"] < m)

    def body(c):
        j, t, y, h, k1 = c["j"], c["t"], c["y"], c["h"], c["k1"]
        b_j = b[j]
        h_try = jnp.minimum(h, b_j - t)
        y_new, err, k7 = _dopri_step(f, t, y, h_try, args, k1)
        e = _rms(err, y, y_new, rtol, atol)
        accept = (e <= 1.0) | (h_try <= 0)
        # an accepted step is recorded for the adjoint (each slot is written once: equinox's
        # buffers then update in place under vmap instead of copying the whole buffer)
        slot = jnp.minimum(c["n"], m - 1)
        ybuf = c["ybuf"].at[slot].set(y, pred=accept)
        tbuf = c["tbuf"].at[slot].set(t, pred=accept)
        hbuf = c["hbuf"].at[slot].set(h_try, pred=accept)
        jbuf = c["jbuf"].at[slot].set(j, pred=accept)
        # step-size control (Hairer et al. II.4: safety 0.9, factor within [0.2, 10])
        fac = jnp.where(
            jnp.isfinite(e), jnp.clip(0.9 * jnp.maximum(e, 1e-10) ** -0.2, 0.2, 10.0), 0.2
        )
        h_next = jnp.where(accept & (h_try < h), jnp.maximum(h, h_try * fac), h_try * fac)
        reached = accept & (h_try >= b_j - t)
        y1 = jnp.where(accept, y_new, y)
        ends = c["ends"].at[j].set(y1, pred=reached)
        j_next = j + reached.astype(j.dtype)
        nxt = jnp.minimum(j_next, n_pieces - 1)
        y2 = jnp.where(reached, y1 + kicks[nxt], y1)
        t2 = jnp.where(reached, a[nxt], jnp.where(accept, t + h_try, t))
        k1_next = jnp.where(reached, f(t2, y2, args), jnp.where(accept, k7, k1))
        return dict(
            j=j_next, t=t2, y=y2, h=h_next, k1=k1_next, tries=c["tries"] + 1,
            n=c["n"] + accept.astype(c["n"].dtype), ybuf=ybuf, tbuf=tbuf, hbuf=hbuf, jbuf=jbuf,
            ends=ends,
        )  # fmt: skip

    buffers = ("ybuf", "tbuf", "hbuf", "jbuf", "ends")
    c = eqxi.while_loop(cond, body, carry0, kind="lax", buffers=lambda c: [c[k] for k in buffers])
    ok = (c["j"] >= n_pieces) & jnp.all(jnp.isfinite(c["ends"]))
    ends = jnp.where(ok, c["ends"], jnp.broadcast_to(y0, c["ends"].shape))
    n = jnp.where(ok, c["n"], 0)
    return (ends, ok), (args, c["ybuf"], c["tbuf"], c["hbuf"], c["jbuf"], n, ok, a, b)


def _dopri_backward(f, rtol, atol, max_steps, res, ct):
    """The discrete adjoint: back through the accepted steps, last first, each step's vector-
    Jacobian product at its recorded ``(t, y, h)`` (the step sizes are held fixed: the
    derivative of the step-size control is not part of the solution's sensitivity)."""
    args, ybuf, tbuf, hbuf, jbuf, n, ok, a, b = res
    ct_ends = ct[0]
    n_pieces = ct_ends.shape[0]
    zero = jnp.zeros_like(ct_ends[0])

    def cond(c):
        return c[0] >= 0

    def body(c):
        k, jcur, lam, g, ct_kicks = c
        jk = jbuf[k]
        crossing = jk != jcur
        slot = jnp.minimum(jcur, n_pieces - 1)
        ct_kicks = ct_kicks.at[slot].set(
            jnp.where(crossing & (jcur < n_pieces), lam, ct_kicks[slot])
        )
        lam = jnp.where(crossing, lam + ct_ends[jk], lam)
        _, vjp = jax.vjp(lambda y, p: _dopri_map(f, tbuf[k], y, hbuf[k], p), ybuf[k], args)
        lam, g_k = vjp(lam)
        return k - 1, jk, lam, jax.tree.map(jnp.add, g, g_k), ct_kicks

    g0 = jax.tree.map(jnp.zeros_like, args)
    carry = (n - 1, jnp.asarray(n_pieces), zero, g0, jnp.zeros_like(ct_ends))
    _, _, lam, g, ct_kicks = jax.lax.while_loop(cond, body, carry)
    ct_kicks = ct_kicks.at[0].set(jnp.where(ok, lam, zero))
    ct_y0 = jnp.where(ok, lam, jnp.sum(ct_ends, axis=0))  # a failed solve returns y0 throughout
    return ct_y0, g, jnp.zeros_like(a), jnp.zeros_like(b), ct_kicks


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 6, 7, 8))
def _dopri_pieces(f, y0, args, a, b, kicks, rtol, atol, max_steps):
    return _dopri_forward(f, y0, args, a, b, kicks, rtol, atol, max_steps)[0]


_dopri_pieces.defvjp(
    lambda f, y0, args, a, b, kicks, rtol, atol, max_steps: _dopri_forward(
        f, y0, args, a, b, kicks, rtol, atol, max_steps
    ),
    _dopri_backward,
)


def solve_pieces(
    vector_field: Callable[[Any, jax.Array, Any], jax.Array],
    y0: jax.Array,
    args: Any,
    a: jax.Array,
    b: jax.Array,
    kicks: jax.Array,
    *,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    max_steps: int = 4096,
) -> tuple[jax.Array, jax.Array]:
    r"""Integrate through consecutive pieces ``[a_j, b_j]`` with an explicit adaptive method,
    adding ``kicks[j]`` to the state at the start of piece ``j``: the states at every ``b_j``.

    The engine of ``solver="dopri5"``: Dormand and Prince's 5(4) pair (the one in MATLAB's
    ``ode45`` and scipy's ``RK45``) with a standard step-size controller, written for the
    sampler: one loop over every step of a subject's whole history (no restart per piece, no
    interpolation: the pieces end where the outputs are wanted), and a *discrete adjoint*
    (:func:`jax.custom_vjp`): the forward pass records each accepted step's ``(t, y, h)`` and
    the backward pass runs the steps' vector-Jacobian products in reverse. That is the exact
    gradient of the numerical solution at the step sizes taken (the step-size control is not
    differentiated), at about the cost of two more forward passes.

    Parameters
    ----------
    vector_field
        ``f(t, y, args) -> dy/dt``, continuous inside each piece.
    y0
        State ``[n]`` at ``a[0]``.
    args
        Pytree of parameters handed to ``f``; differentiable.
    a, b
        ``[K]`` start and end of each piece, ``a[j] <= b[j] <= a[j+1]`` (not differentiable).
    kicks
        ``[K, n]`` added to the state at ``a[j]`` (doses); differentiable.
    rtol, atol
        Tolerances of the error per step (root mean square over the states of
        ``err / (atol + rtol * |y|)``).
    max_steps
        Accepted steps over all pieces (and four times as many tries); running out is a
        failure (``ok=False``), never an exception. It sizes the buffer the adjoint reads.

    Returns
    -------
    ends : Array ``[K, n]``
        The state at each ``b[j]``, before ``kicks[j + 1]``; ``y0`` throughout where the
        solve failed.
    ok : bool Array ``[]``

    Not for stiff equations: an explicit method's steps stay within its stability region, so a
    fast rate constant (a large ``kout``, ``ke0`` or ``ktr``) forces tiny steps until
    ``max_steps`` runs out.
    """
    y0 = jnp.asarray(y0)
    dtype = jnp.result_type(y0.dtype, jnp.float32)
    return _dopri_pieces(
        vector_field,
        y0.astype(dtype),
        args,
        jnp.asarray(a, dtype),
        jnp.asarray(b, dtype),
        jnp.asarray(kicks, dtype),
        float(rtol),
        float(atol),
        int(max_steps),
    )
