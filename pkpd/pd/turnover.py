r"""Turnover PD driven by a concentration: indirect response I–IV, bounded turnover, effect site.

Each model is a *vector-field builder*: it takes a driver ``conc_fn(t, params) -> C`` (the PK
evaluated analytically inside the vector field, e.g. a sum of exponentials over the dose
history) and returns ``f(t, y, params) -> dy/dt`` for :func:`pkpd.ode.solve`. ``params`` is one
dict of named parameters holding both the PK the driver needs and the PD keys listed below, so
one pytree flows through ``jit``, ``vmap`` and ``grad``. Each builder has a solving companion
(:func:`indirect_response`, :func:`bounded_turnover`, :func:`effect_compartment`) that sets the
initial condition and returns the response at ``t_eval``; pass the driver's discontinuity times
(dose times, infusion ends) as ``jump_ts``.

Drug effects
------------
Inhibition :math:`I(C) = I_{max} C^h/(IC_{50}^h + C^h)` (keys ``imax``, ``ic50``, ``hill``)
and stimulation :math:`S(C) = E_{max} C^h/(EC_{50}^h + C^h)` (keys ``emax``, ``ec50``,
``hill``); ``hill`` defaults to 1 when absent. ``ic50``/``ec50`` are in the driver's unit.

Baseline parameterisation
-------------------------
Turnover models are written with the baseline ``r0`` (response units) and ``kout`` (1/h), so
:math:`k_{in} = R_0 k_{out}`. This is the same model as the textbook ``(kin, kout)`` form
(a ``kin`` key is accepted instead of ``r0``, then :math:`R_0 = k_{in}/k_{out}`), but with
``r0`` the right-hand side is *exactly* zero at baseline without drug, so "no drug → baseline"
holds to the last bit, and ``r0`` is what data identify best.

References: Dayneka NL, Garg V, Jusko WJ. Comparison of four basic models of indirect
pharmacodynamic responses. J Pharmacokinet Biopharm 1993;21:457-478. Sheiner LB et al.
Simultaneous modeling of pharmacokinetics and pharmacodynamics: application to d-tubocurarine.
Clin Pharmacol Ther 1979;25:358-371 (effect compartment).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from pkpd.pd.direct import hill_fraction, remaining_fraction

__all__ = [
    "bounded_turnover_rates",
    "indirect_response_rates",
    "indirect_response_field",
    "indirect_response",
    "bounded_turnover_field",
    "bounded_turnover",
    "effect_compartment_field",
    "effect_compartment",
    "irm_baseline",
]

ConcFn = Callable[[Any, Any], jax.Array]

_KINDS = {"I": 1, "II": 2, "III": 3, "IV": 4, 1: 1, 2: 2, 3: 3, 4: 4}

# Tolerances of the PD solves: responses are O(1)-O(100) in their own units.
PD_RTOL = 1e-9
PD_ATOL = 1e-12
# The logit-scale bounded turnover is strongly nonlinear when the drug drives P towards 0 or
# 100 and back; Kvaerno5's chord iteration then rejects many steps (~2000 steps for a day at
# kin = 500/h), so it gets a larger budget.
BOUNDED_MAX_STEPS = 16384
#: Step budget of the other solves (:data:`pkpd.ode.DEFAULT_MAX_STEPS`; pkpd.ode, and with it
#: diffrax, is imported only when a solve runs).
DEFAULT_MAX_STEPS = 4096


def solve(*args, **kwargs):
    """:func:`pkpd.ode.solve`, imported on first use."""
    from pkpd.ode import solve as ode_solve

    return ode_solve(*args, **kwargs)


def _kind(kind) -> int:
    try:
        return _KINDS[kind.upper() if isinstance(kind, str) else kind]
    except (KeyError, AttributeError):
        raise ValueError(
            f"indirect response kind={kind!r}; expected 'I', 'II', 'III', 'IV' (or 1-4): "
            "I inhibits production, II inhibits loss, III stimulates production, "
            "IV stimulates loss"
        ) from None


def irm_baseline(params) -> jax.Array:
    """Baseline R0 of a turnover model: ``params["r0"]``, else ``kin / kout``."""
    if "r0" in params:
        return jnp.asarray(params["r0"])
    if "kin" in params:
        return jnp.asarray(params["kin"]) / params["kout"]
    raise KeyError("turnover parameters need 'r0' (baseline) or 'kin', and 'kout'")


def indirect_response_rates(kind, c, r0, kout, *, imax=0.0, ic50=1.0, emax=0.0, ec50=1.0):
    r"""Production and loss of an indirect response at driver ``c``: ``dR/dt = p − l·R``.

    The four models of :func:`indirect_response_field` with a hyperbolic drug effect
    (:math:`I(c) = I_{max} c/(IC_{50} + c)`, :math:`S(c) = E_{max} c/(EC_{50} + c)`, Hill
    coefficient 1) and :math:`k_{in} = R_0 k_{out}`:

    ======  ==========================  ==========================
    kind    production p                loss l
    ======  ==========================  ==========================
    I       :math:`k_{in}(1 - I(c))`    :math:`k_{out}`
    II      :math:`k_{in}`              :math:`k_{out}(1 - I(c))`
    III     :math:`k_{in}(1 + S(c))`    :math:`k_{out}`
    IV      :math:`k_{in}`              :math:`k_{out}(1 + S(c))`
    ======  ==========================  ==========================

    This is the form the exponential integrators step (:mod:`pkpd.pd.forced`, the simulation's
    modal engine): linear in the state given the driver. ``c`` (>= 0, the unit of ``ic50``)
    may be an array; returns ``(p, l)`` of its shape.
    """
    k = _kind(kind)
    kin = r0 * kout
    one = jnp.ones_like(c)
    if k in (1, 2):
        rem = 1.0 - imax * c / (ic50 + c)
        return (kin * rem, jnp.full_like(c, kout)) if k == 1 else (kin * one, kout * rem)
    stim = 1.0 + emax * c / (ec50 + c)
    return (kin * stim, jnp.full_like(c, kout)) if k == 3 else (kin * one, kout * stim)


def bounded_turnover_rates(c, p0, kout, imax, ic50):
    r"""Production and loss of the bounded turnover of a percentage at driver ``c``:
    ``dP/dt = p − l·P`` (the model of :func:`bounded_turnover_field` on the percentage scale,
    hyperbolic inhibition, Hill coefficient 1).

    With :math:`g = k_{in}(1 - I(c))`, :math:`k_{in} = k_{out} P_0/(100 - P_0)`:
    :math:`\dot P = g\,(100 - P) - k_{out} P`, so :math:`p = 100\,g` and
    :math:`l = g + k_{out}`.
    """
    kin = kout * p0 / (100.0 - p0)
    g = kin * (1.0 - imax * c / (ic50 + c))
    return 100.0 * g, g + kout


def indirect_response_field(kind, conc_fn: ConcFn):
    r"""Vector field of indirect response model I, II, III or IV (Dayneka, Garg & Jusko 1993).

    .. math::
        \text{I:}\;   \dot R = k_{in}(1 - I(C)) - k_{out} R \qquad
        \text{II:}\;  \dot R = k_{in} - k_{out}(1 - I(C)) R

        \text{III:}\; \dot R = k_{in}(1 + S(C)) - k_{out} R \qquad
        \text{IV:}\;  \dot R = k_{in} - k_{out}(1 + S(C)) R

    with :math:`k_{in} = R_0 k_{out}`, :math:`R(0) = R_0` (implemented as
    :math:`\dot R = k_{out}(R_0(1 - I) - R)` etc., exactly zero at baseline without drug).

    Parameters
    ----------
    kind : "I" | "II" | "III" | "IV"
    conc_fn : ``conc_fn(t, params) -> C``, the driver concentration at time ``t`` (h).

    ``params`` keys: ``r0`` (baseline, response units; or ``kin`` in units/h), ``kout`` (1/h);
    ``imax`` (0-1), ``ic50`` (driver unit), ``hill`` for I/II; ``emax`` (dimensionless fold
    stimulation), ``ec50``, ``hill`` for III/IV.

    Returns
    -------
    ``f(t, y, params)`` with ``y = [R]``.
    """
    k = _kind(kind)

    def field(t, y, params):
        r = y[0]
        r0 = irm_baseline(params)
        kout = params["kout"]
        c = conc_fn(t, params)
        hill = params.get("hill", 1.0)
        if k in (1, 2):
            rem = remaining_fraction(c, params["imax"], params["ic50"], hill)
            dr = kout * (r0 * rem - r) if k == 1 else kout * (r0 - rem * r)
        else:
            s = params["emax"] * hill_fraction(c, params["ec50"], hill)
            dr = kout * (r0 * (1.0 + s) - r) if k == 3 else kout * (r0 - (1.0 + s) * r)
        return jnp.stack([dr])

    return field


def indirect_response(
    kind,
    conc_fn: ConcFn,
    params,
    t_eval,
    *,
    jump_ts=None,
    t0=0.0,
    solver="kvaerno5",
    rtol=PD_RTOL,
    atol=PD_ATOL,
    max_steps=DEFAULT_MAX_STEPS,
) -> tuple[jax.Array, jax.Array]:
    """Solve an indirect response model from baseline ``R(t0) = R0``; returns ``(R [P], ok)``.

    See :func:`indirect_response_field` for the equations and parameter keys, and
    :func:`pkpd.ode.solve` for ``jump_ts``, ``solver``, tolerances and the failure signal.
    """
    r0 = irm_baseline(params)
    y0 = jnp.reshape(jnp.asarray(r0, dtype=jnp.result_type(float)), (1,))
    ys, ok = solve(
        indirect_response_field(kind, conc_fn), y0, params, t_eval=t_eval, jump_ts=jump_ts,
        t0=t0, solver=solver, rtol=rtol, atol=atol, max_steps=max_steps,
    )  # fmt: skip
    return ys[:, 0], ok


_EXP_CLIP = 700.0  # exp(700) ~ 1e304: keeps the logit-scale rates finite in float64


def bounded_turnover_field(conc_fn: ConcFn):
    r"""Turnover of a percentage that stays inside (0, 100) by construction.

    Model: cells (or any units) switch between a negative and a positive state; :math:`P` is
    the percentage positive, :math:`p = P/100`. Negative units turn positive at rate
    :math:`k_{in}(1 - I(C))` (the drug inhibits the conversion), positive units revert at
    :math:`k_{out}`:

    .. math::
        \dot p = k_{in}\,(1 - I(C))\,(1 - p) - k_{out}\,p,
        \qquad k_{in} = k_{out}\,\frac{p_0}{1 - p_0},\quad p(0) = p_0 .

    This is an indirect response model (type I on the positive fraction) whose production is
    proportional to what is left to convert, so the steady state
    :math:`p_{ss} = k_{in}(1-I)/(k_{in}(1-I) + k_{out})` lies in (0, 1) for every drug effect
    and the vector field points inwards at both 0 and 1.

    Why the logit scale. The equation above keeps [0, 1] invariant only in exact arithmetic; a
    numerical solver with absolute tolerance ``atol`` can step to ``-atol`` when :math:`p` is
    driven near 0 (``imax`` → 1, huge doses). The state is therefore
    :math:`x = \operatorname{logit}(p)`, which obeys the *same* dynamics,

    .. math::
        \dot x = \frac{\dot p}{p(1-p)} = k_{out}\,(1 + e^{x})
                 \left[(1 - I(C))\,e^{x_0 - x} - 1\right],
        \qquad x_0 = \operatorname{logit}(p_0),

    and :math:`P = 100\,\sigma(x)` lies in (0, 100) for any finite :math:`x`, whatever the
    solver does. The ODE state is the deviation :math:`z = x - x_0` (:math:`z(0) = 0`), so the
    right-hand side is exactly zero at baseline without drug and :math:`P` stays exactly at
    :math:`100\,\sigma(x_0)` (= ``p0`` to rounding); exponents are clipped at ±700 to keep
    float64 finite (:math:`p < 10^{-300}`).

    ``params`` keys: ``p0`` (baseline %, 0 < p0 < 100), ``kout`` (1/h; reversion rate of
    positive units), ``imax`` (0-1), ``ic50`` (driver unit), ``hill`` (optional, default 1).

    Returns ``f(t, y, params)`` with ``y = [logit(P/100) - logit(p0/100)]``; use
    :func:`bounded_turnover` to get percentages.
    """

    def field(t, y, params):
        z = y[0]  # x - x0
        x0 = _logit_pct(params["p0"])
        rem = remaining_fraction(
            conc_fn(t, params), params["imax"], params["ic50"], params.get("hill", 1.0)
        )
        up = jnp.exp(jnp.clip(x0 + z, -_EXP_CLIP, _EXP_CLIP))
        back = jnp.exp(jnp.clip(-z, -_EXP_CLIP, _EXP_CLIP))
        return jnp.stack([params["kout"] * (1.0 + up) * (rem * back - 1.0)])

    return field


def _logit_pct(p_pct):
    p = jnp.asarray(p_pct) / 100.0
    return jnp.log(p) - jnp.log1p(-p)


def bounded_turnover(
    conc_fn: ConcFn,
    params,
    t_eval,
    *,
    jump_ts=None,
    t0=0.0,
    solver="kvaerno5",
    rtol=PD_RTOL,
    atol=PD_ATOL,
    max_steps=BOUNDED_MAX_STEPS,
) -> tuple[jax.Array, jax.Array]:
    """Solve :func:`bounded_turnover_field` from ``P(t0) = p0``; returns ``(P [P] in %, ok)``.

    Examples
    --------
    >>> import pkpd, jax.numpy as jnp
    >>> from pkpd.pd import bounded_turnover
    >>> conc = lambda t, p: 50.0 * jnp.exp(-0.1 * t)
    >>> pars = {"p0": 16.8, "kout": 0.05, "imax": 1.0, "ic50": 5.0}
    >>> pct, ok = bounded_turnover(conc, pars, jnp.array([0.0, 24.0]))
    >>> bool(ok), float(pct[0]), bool(0 < pct[1] < 16.8)
    (True, 16.8, True)
    """
    z0 = jnp.zeros(1, dtype=jnp.result_type(float))
    ys, ok = solve(
        bounded_turnover_field(conc_fn), z0, params, t_eval=t_eval, jump_ts=jump_ts, t0=t0,
        solver=solver, rtol=rtol, atol=atol, max_steps=max_steps,
    )  # fmt: skip
    return 100.0 * jax.nn.sigmoid(_logit_pct(params["p0"]) + ys[:, 0]), ok


def effect_compartment_field(conc_fn: ConcFn):
    r"""Effect compartment (link model): :math:`\dot C_e = k_{e0}\,(C(t) - C_e)`.

    ``params`` key: ``ke0`` (1/h; equilibration half-life ln2/ke0). :math:`C_e` has the unit
    of the driver. Feed :math:`C_e` to a direct model (:mod:`pkpd.pd.direct`). This is the
    general ODE form, for any driver; for polyexponential PK a closed form exists.

    Returns ``f(t, y, params)`` with ``y = [Ce]``.
    """

    def field(t, y, params):
        return jnp.stack([params["ke0"] * (conc_fn(t, params) - y[0])])

    return field


def effect_compartment(
    conc_fn: ConcFn,
    params,
    t_eval,
    *,
    ce0=0.0,
    jump_ts=None,
    t0=0.0,
    solver="kvaerno5",
    rtol=PD_RTOL,
    atol=PD_ATOL,
    max_steps=DEFAULT_MAX_STEPS,
) -> tuple[jax.Array, jax.Array]:
    """Solve :func:`effect_compartment_field` from ``Ce(t0) = ce0``; returns ``(Ce [P], ok)``."""
    y0 = jnp.reshape(jnp.asarray(ce0, dtype=jnp.result_type(float)), (1,))
    ys, ok = solve(
        effect_compartment_field(conc_fn), y0, params, t_eval=t_eval, jump_ts=jump_ts, t0=t0,
        solver=solver, rtol=rtol, atol=atol, max_steps=max_steps,
    )  # fmt: skip
    return ys[:, 0], ok
