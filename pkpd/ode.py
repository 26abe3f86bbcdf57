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

from collections.abc import Callable
from typing import Any

import diffrax
import jax
import jax.numpy as jnp

__all__ = [
    "solve",
    "solve_piece",
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
