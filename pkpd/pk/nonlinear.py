r"""Nonlinear PK by ODE: any vector field, NONMEM-style dose histories, one subject at a time.

:func:`predict_ode` integrates a user's compartment model :math:`\dot A = f(t, A, \theta)` over a
subject's padded dose history (:class:`pkpd.data.arrays.SubjectData`, one row, no subject axis)
and returns its outputs at the subject's prediction points. Batch with ``jax.vmap``.

Event handling
--------------
* **Bolus doses** are jumps of the state. The events — doses, infusion ends and any extra
  ``jump_ts`` — are sorted by (time, seq) and the integration is split at each of them, one
  solve per interval in a :func:`jax.lax.scan` (one compiled solve, whatever their number;
  ``2D + J + 1`` solves, not one per dose with every jump inside it): an interval starting at
  a dose starts with the bolus added to its state. A prediction point at exactly a dose time is post-dose when the dose's
  ``seq`` is lower than or equal to the point's, pre-dose otherwise (NONMEM's rule: a dose
  row's own prediction is post-dose; implied ADDL doses have seq -1). Masked (padding) doses are
  no-ops: zero amount, and their time only splits a segment.
* **Zero-order infusions** (``RATE > 0``; duration ``AMT/RATE``) enter the vector field as a
  piecewise-constant input :math:`u(t) = \sum_d R_d\,[t_d \le t < t_d + \text{AMT}_d/R_d]` into
  the dose's compartment; start and end times are the solver's ``jump_ts``.
* Events this engine does not model set ``ok=False`` (no exception inside ``jit``): modelled
  rate or duration (``RATE = -1/-2``), steady state (``SS != 0``), resets (``EVID 3/4``),
  and doses into a compartment that ``dose_states`` does not map. Use the analytic engine
  (:mod:`pkpd.pk.analytic`) for those on linear models.

Units: time h, amounts mg, rates mg/h, volumes L; a concentration in ng/mL is
``1000 * A / V`` (mg/L = µg/mL = 1000 ng/mL).

Worked example: one compartment with Michaelis–Menten elimination (:func:`one_cmt_mm`)::

    dA/dt = -Vmax * C / (Km + C) - CL * C / 1000,   C = 1000 * A / V   [ng/mL]

As ``Km`` → ∞ it becomes linear with clearance ``CL + 1000 * Vmax / Km`` (L/h).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from pkpd.ode import (
    DEFAULT_ATOL,
    DEFAULT_MAX_STEPS,
    DEFAULT_RTOL,
    _finite_cotangent,
    solve_piece,
    solve_pieces,
)

__all__ = ["predict_ode", "one_cmt_mm_vector_field", "one_cmt_mm", "dose_inputs"]


def _state_lookup(dose_states: Mapping[int, int] | None, default_state: int, n_states: int):
    """A table NONMEM CMT → state index (-1 unmapped); CMT 0 means ``default_state``."""
    mapping = {0: default_state}
    if dose_states is not None:
        mapping.update({int(k): int(v) for k, v in dose_states.items()})
    for cmt, idx in mapping.items():
        if not 0 <= idx < n_states:
            raise ValueError(
                f"dose_states maps CMT {cmt} to state {idx}, but the model has states "
                f"0..{n_states - 1}; map every dosed compartment to a state index in range"
            )
        if cmt < 0:
            raise ValueError(f"dose_states has a negative compartment number {cmt}")
    lut = np.full(max(mapping) + 1, -1, dtype=np.int32)
    for cmt, idx in mapping.items():
        lut[cmt] = idx
    return jnp.asarray(lut)


def dose_inputs(subject, n_states: int, *, dose_states=None, default_state: int = 0):
    """Split a subject's doses into boluses and infusions, sorted by (time, seq).

    Returns a dict of arrays (``D`` = padded doses): ``time`` [D], ``seq`` [D], ``bolus``
    [D, n] (mg added to each state at ``time``), ``inf_start`` / ``inf_end`` [D] (h),
    ``inf_rate`` [D, n] (mg/h into each state while infusing), and ``supported`` (scalar bool,
    False when a real dose uses an event type the ODE engine does not model).
    """
    lut = _state_lookup(dose_states, default_state, n_states)
    t = jnp.asarray(subject.dose_time)
    seq = jnp.asarray(subject.dose_seq)
    order = jnp.lexsort((seq, t))
    t, seq = t[order], seq[order]
    amt = jnp.asarray(subject.dose_amt)[order]
    rate = jnp.asarray(subject.dose_rate)[order]
    cmt = jnp.asarray(subject.dose_cmt)[order]
    mask = jnp.asarray(subject.dose_mask)[order]
    evid = jnp.asarray(subject.dose_evid)[order]
    ss = jnp.asarray(subject.dose_ss)[order]
    # an infusion given by its duration (RATE 0, DUR > 0) runs at AMT/DUR
    dur_in = jnp.asarray(getattr(subject, "dose_dur", jnp.zeros_like(amt)))[order]
    by_dur = (rate == 0) & (dur_in > 0)
    rate = jnp.where(by_dur, amt / jnp.where(by_dur, dur_in, 1.0), rate)

    in_table = (cmt >= 0) & (cmt < lut.shape[0])
    idx = jnp.where(in_table, lut[jnp.clip(cmt, 0, lut.shape[0] - 1)], -1)
    bad = mask & ((idx < 0) | (rate < 0) | (ss != 0) | (evid != 1))
    onehot = jax.nn.one_hot(jnp.maximum(idx, 0), n_states, dtype=amt.dtype)
    is_bolus = mask & (rate == 0) & ~bad
    is_inf = mask & (rate > 0) & ~bad
    safe_rate = jnp.where(is_inf, rate, 1.0)
    dur = jnp.where(is_inf, amt / safe_rate, 0.0)
    return dict(
        time=t,
        seq=seq,
        bolus=onehot * jnp.where(is_bolus, amt, 0.0)[:, None],
        inf_start=t,
        inf_end=t + dur,
        inf_rate=onehot * jnp.where(is_inf, rate, 0.0)[:, None],
        supported=~jnp.any(bad),
    )


def _with_infusions(vector_field):
    def field(t, y, args):
        params, start, end, rate = args
        on = (t >= start) & (t < end)
        return vector_field(t, y, params) + jnp.sum(jnp.where(on[:, None], rate, 0.0), axis=0)

    return field


def _lex_ge(t, s, t_ref, s_ref):
    """(t, s) >= (t_ref, s_ref) in lexicographic order: the event at t_ref acts on t."""
    return (t > t_ref) | ((t == t_ref) & (s >= s_ref))


def predict_ode(
    vector_field: Callable[[Any, jax.Array, Any], jax.Array],
    n_states: int,
    params: Any,
    subject,
    *,
    output_fn: Callable[[Any, jax.Array, Any], Mapping[str, jax.Array]],
    dose_states: Mapping[int, int] | None = None,
    default_state: int = 0,
    y0: jax.Array | None = None,
    t0: float | None = None,
    jump_ts: jax.Array | None = None,
    solver: str = "kvaerno5",
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    max_steps: int | None = None,
    adjoint=None,
) -> tuple[dict[str, jax.Array], jax.Array]:
    r"""Predict a nonlinear ODE model at one subject's points, through its dose history.

    Parameters
    ----------
    vector_field
        ``f(t, A, params) -> dA/dt`` ([n_states]) *without* dosing: boluses and infusions are
        added by the engine (amounts in mg, time in h).
    n_states
        Number of ODE states.
    params
        Named parameters (a dict of scalars, units in the model's docstring); differentiable.
    subject
        One row of :class:`~pkpd.data.arrays.SubjectData` (leaves without the subject axis).
        Uses ``dose_time, dose_amt, dose_rate, dose_dur`` (infusions by RATE or by DUR),
        ``dose_cmt, dose_evid, dose_ss, dose_seq, dose_mask, point_time, point_seq``.
    output_fn
        ``g(t, A, params) -> {endpoint: scalar}`` at one time; evaluated at every point.
    dose_states
        NONMEM compartment number → state index for dosing; ``CMT=0`` (the model default)
        goes to ``default_state``.
    y0
        State at ``t0`` (default zeros: no drug before the first dose).
    t0
        Start of integration (default ``min(0, first dose, first point)``); points before it
        get the output of ``y0``.
    jump_ts
        Extra discontinuity times of ``f`` itself (the engine adds dose and infusion times).
    solver
        ``"kvaerno5"`` (stiff, the default) or ``"tsit5"``: diffrax (:func:`pkpd.ode.solve`),
        one solve per interval between events; ``"dopri5"``: pkpd's own explicit solver for
        non-stiff equations (:func:`pkpd.ode.solve_pieces`), one loop over the whole history
        with a discrete adjoint, several times cheaper per gradient (benchmarks/RESULTS.md).
    rtol, atol
        Tolerances of the adaptive steps.
    max_steps
        Step budget: per interval between events with diffrax (default 4096); over the whole
        history with ``"dopri5"`` (default ``max(1024, 32 × intervals)``; it sizes the buffer
        the gradient reads). Running out is a failed solve (``ok`` False), not an exception.
    adjoint
        A :class:`diffrax.AbstractAdjoint` for the diffrax solvers (default
        :class:`diffrax.RecursiveCheckpointAdjoint`); ignored by ``"dopri5"``.

    Returns
    -------
    outputs : dict of Array ``[P]``
        ``output_fn``'s endpoints at ``subject.point_time``.
    ok : bool Array ``[]``
        False if any segment's solve failed or a dose used an unsupported event type.
    """
    ev = dose_inputs(subject, n_states, dose_states=dose_states, default_state=default_state)
    pt = jnp.asarray(subject.point_time)
    pseq = jnp.asarray(subject.point_seq)
    dtype = jnp.result_type(pt.dtype, ev["bolus"].dtype, jnp.float32)
    pt = pt.astype(dtype)
    y_init = jnp.zeros(n_states, dtype) if y0 is None else jnp.asarray(y0, dtype)
    if t0 is None:
        t_start = jnp.minimum(jnp.minimum(jnp.min(pt), jnp.min(ev["time"])), 0.0)
    else:
        t_start = jnp.asarray(t0, dtype)
    t_last = jnp.maximum(jnp.max(pt), jnp.max(ev["time"]))

    # One solve between consecutive events: a dose (the state jumps by its bolus; an infusion
    # starts), an infusion's end, an extra jump of f. An event that is not a dose sorts before
    # the doses at its time (seq -big), and a point at its time falls after it (the state is
    # continuous there, so either side gives the same value).
    big = jnp.iinfo(jnp.int32).max
    n_dose = ev["time"].shape[0]
    extra = jnp.zeros((0,), dtype) if jump_ts is None else jnp.asarray(jump_ts, dtype).reshape(-1)
    n_other = n_dose + extra.shape[0]
    ev_t = jnp.concatenate([ev["time"].astype(dtype), ev["inf_end"].astype(dtype), extra])
    ev_seq = jnp.concatenate([ev["seq"].astype(jnp.int32), jnp.full(n_other, -big, jnp.int32)])
    ev_kick = jnp.concatenate([ev["bolus"].astype(dtype), jnp.zeros((n_other, n_states), dtype)])
    order = jnp.lexsort((ev_seq, ev_t))
    ev_t = jnp.clip(ev_t[order], t_start, t_last)
    ev_seq, ev_kick = ev_seq[order], ev_kick[order]

    starts = jnp.concatenate([t_start[None], ev_t])
    start_seq = jnp.concatenate([jnp.array([-big], jnp.int32), ev_seq])
    ends = jnp.concatenate([ev_t, t_last[None]])
    end_seq = jnp.concatenate([ev_seq, jnp.array([big], jnp.int32)])
    kicks = jnp.concatenate([jnp.zeros((1, n_states), dtype), ev_kick])
    first = jnp.arange(starts.shape[0]) == 0
    last = jnp.arange(starts.shape[0]) == starts.shape[0] - 1

    field = _with_infusions(vector_field)
    args = (params, ev["inf_start"], ev["inf_end"], ev["inf_rate"])
    if solver == "dopri5":
        if max_steps is None:  # every event and point ends an interval
            max_steps = max(1024, 32 * (ev_t.shape[0] + pt.shape[0] + 1))
        return _predict_dopri(
            field, args, pt, pseq, ev_t, ev_seq, ev_kick, t_start, t_last, y_init, params,
            output_fn, ev["supported"], rtol, atol, max_steps,
        )  # fmt: skip
    p_order = jnp.lexsort((pseq, pt))
    pt_s, pseq_s = pt[p_order], pseq[p_order]

    def interval(carry, x):
        y, acc, ok = carry
        s, s_seq, e, e_seq, kick, is_first, is_last = x
        y = y + kick
        # one ulp inside each event, so f is never evaluated on the wrong side of a jump
        a = jnp.where(is_first, s, jnp.minimum(jnp.nextafter(s, jnp.inf), e))
        b = jnp.maximum(jnp.where(is_last, e, jnp.nextafter(e, -jnp.inf)), a)
        ys, y_end, seg_ok = solve_piece(
            field, y, args, a, b, pt_s,
            solver=solver, rtol=rtol, atol=atol, adjoint=adjoint,
            max_steps=DEFAULT_MAX_STEPS if max_steps is None else max_steps,
        )  # fmt: skip
        inside = (is_first | _lex_ge(pt_s, pseq_s, s, s_seq)) & (
            is_last | ~_lex_ge(pt_s, pseq_s, e, e_seq)
        )
        acc = jnp.where(inside[:, None], ys, acc)
        return (y_end, acc, ok & seg_ok), None

    acc0 = jnp.broadcast_to(y_init, (pt.shape[0], n_states))
    (_, acc, ok), _ = jax.lax.scan(
        interval,
        (y_init, acc0, ev["supported"]),
        (starts, start_seq, ends, end_seq, kicks, first, last),
    )
    states = jnp.empty_like(acc).at[p_order].set(acc)
    if not isinstance(adjoint, diffrax.ForwardMode):  # (a custom_vjp has no forward mode)
        states = _finite_cotangent(states)
    outputs = jax.vmap(output_fn, in_axes=(0, 0, None))(pt, states, params)
    return dict(outputs), ok


def _predict_dopri(
    field, args, pt, pseq, ev_t, ev_seq, ev_kick, t_start, t_last, y_init, params, output_fn,
    supported, rtol, atol, max_steps,
):  # fmt: skip
    """``predict_ode`` with ``solver="dopri5"``: the points join the events as piece ends (no
    interpolation), and :func:`pkpd.ode.solve_pieces` runs the whole history in one loop."""
    n_ev, n_pt, n = ev_t.shape[0], pt.shape[0], y_init.shape[0]
    dtype = y_init.dtype
    all_t = jnp.concatenate([ev_t, jnp.clip(pt, t_start, t_last)])
    all_seq = jnp.concatenate([ev_seq, pseq.astype(jnp.int32)])
    all_jump = jnp.concatenate([jnp.ones(n_ev, bool), jnp.zeros(n_pt, bool)])
    all_kick = jnp.concatenate([ev_kick, jnp.zeros((n_pt, n), dtype)])
    order = jnp.lexsort((all_seq, all_t))
    all_t, all_jump, all_kick = all_t[order], all_jump[order], all_kick[order]
    a = jnp.concatenate([t_start[None], all_t])
    b = jnp.concatenate([all_t, t_last[None]])
    start_jump = jnp.concatenate([jnp.zeros(1, bool), all_jump])
    end_jump = jnp.concatenate([all_jump, jnp.zeros(1, bool)])
    # one ulp inside each discontinuity, so f is never evaluated on the wrong side of it
    a = jnp.where(start_jump, jnp.minimum(jnp.nextafter(a, jnp.inf), b), a)
    b = jnp.maximum(jnp.where(end_jump, jnp.nextafter(b, -jnp.inf), b), a)
    kicks = jnp.concatenate([jnp.zeros((1, n), dtype), all_kick])
    ends, ok = solve_pieces(field, y_init, args, a, b, kicks, rtol=rtol, atol=atol,
                            max_steps=max_steps)  # fmt: skip
    position = jnp.empty_like(order).at[order].set(jnp.arange(order.shape[0]))
    states = _finite_cotangent(ends[position[n_ev:]])  # point q ends the piece it sorts into
    outputs = jax.vmap(output_fn, in_axes=(0, 0, None))(pt, states, params)
    return dict(outputs), ok & supported


def one_cmt_mm_vector_field(t, y, params):
    r"""One compartment, Michaelis–Menten (+ optional linear) elimination.

    .. math::
        \frac{dA}{dt} = -\frac{V_{max}\,C}{K_m + C} - \frac{CL\,C}{1000},
        \qquad C = \frac{1000\,A}{V}

    Parameters (``params`` dict)
    ----------------------------
    vmax : mg/h
        Maximum elimination rate.
    km : ng/mL
        Concentration at half-maximal elimination rate.
    v : L
        Volume of distribution.
    cl : L/h, optional
        Additional linear clearance (default 0).

    State ``y[0]`` is the central amount A (mg). Far below Km the elimination is linear with
    clearance ``cl + 1000 * vmax / km`` L/h.
    """
    conc = 1000.0 * y[0] / params["v"]
    cl = params.get("cl", 0.0) if isinstance(params, Mapping) else 0.0
    return jnp.stack([-params["vmax"] * conc / (params["km"] + conc) - cl * conc / 1000.0])


def _one_cmt_output(t, y, params):
    return {"conc": 1000.0 * y[0] / params["v"]}


def one_cmt_mm(params, subject, **kwargs) -> tuple[dict[str, jax.Array], jax.Array]:
    """Predict ``{"conc": ng/mL}`` of :func:`one_cmt_mm_vector_field` for one subject.

    Doses go into the central compartment (``CMT`` 0 or 1). ``kwargs`` go to
    :func:`predict_ode` (solver, tolerances, ``max_steps``).

    Examples
    --------
    >>> import pkpd, numpy as np, jax.numpy as jnp
    >>> from types import SimpleNamespace
    >>> from pkpd.pk.nonlinear import one_cmt_mm
    >>> subj = SimpleNamespace(
    ...     dose_time=np.array([0.0]), dose_amt=np.array([100.0]), dose_rate=np.array([0.0]),
    ...     dose_cmt=np.array([1]), dose_evid=np.array([1]), dose_ss=np.array([0]),
    ...     dose_seq=np.array([0]), dose_mask=np.array([True]),
    ...     point_time=np.array([0.0, 12.0]), point_seq=np.array([1, 1]))
    >>> out, ok = one_cmt_mm({"vmax": 10.0, "km": 500.0, "v": 50.0}, subj)
    >>> bool(ok), round(float(out["conc"][0]), 6)
    (True, 2000.0)
    """
    return predict_ode(
        one_cmt_mm_vector_field,
        1,
        params,
        subject,
        output_fn=_one_cmt_output,
        dose_states={1: 0},
        **kwargs,
    )
