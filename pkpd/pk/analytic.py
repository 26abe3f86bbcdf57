r"""Analytic linear mammillary PK: sums of exponentials over any NONMEM-style dose history.

The models are NONMEM's ADVAN1/2 (one compartment), ADVAN3/4 (two) and ADVAN11/12 (three):
a central compartment exchanging with up to two peripheral compartments, elimination from the
central compartment, and an optional first-order absorption depot.

Structure and notation
----------------------
Micro-constants (1/h) from clearances (L/h) and volumes (L)::

    k10 = CL/V1,   k1p = Qp/V1,   kp1 = Qp/Vp          (p = 2, 3: peripheral compartments)

The disposition (central + peripheral) amounts obey :math:`\dot A = K A + u(t)`. The
eigenvalues of :math:`-K` ("poles", :math:`\lambda_1 > \lambda_2 > \lambda_3 > 0`, NONMEM's
alpha, beta, gamma) are the roots of the characteristic polynomial, in closed form:

* one compartment: :math:`\lambda = k_{10}`;
* two: :math:`\lambda_{1,2} = \tfrac12\left(a \pm \sqrt{a^2 - 4 k_{10}k_{21}}\right)`,
  :math:`a = k_{10}+k_{12}+k_{21}` (the smaller root computed as :math:`k_{10}k_{21}/\lambda_1`
  to avoid cancellation);
* three: the trigonometric solution of the cubic
  :math:`\lambda^3 - a_2\lambda^2 + a_1\lambda - a_0`, with
  :math:`a_2 = k_{10}+k_{12}+k_{13}+k_{21}+k_{31}`,
  :math:`a_1 = k_{10}k_{21}+k_{10}k_{31}+k_{21}k_{31}+k_{13}k_{21}+k_{12}k_{31}`,
  :math:`a_0 = k_{10}k_{21}k_{31}` (the smallest root as :math:`a_0/(\lambda_1\lambda_2)`).

Laplace transforms give every unit-bolus response as a ratio of polynomials
:math:`N(s)/\prod_j (s+\lambda_j)`; the response in the time domain is the sum of residues

.. math:: a(u) = \sum_i c_i e^{-\lambda_i u}, \qquad
          c_i = \frac{N(-\lambda_i)}{\prod_{j\ne i} (\lambda_j - \lambda_i)}.

For a dose into the central compartment, :math:`N(s) = \prod_p (s + k_{p1})` for the central
amount and :math:`N(s) = k_{1p}\prod_{q\ne p}(s+k_{q1})` for peripheral ``p``. A dose into the
depot multiplies the transform by :math:`k_a/(s+k_a)` (one more pole, :math:`k_a`); the depot
amount itself is :math:`e^{-k_a u}`.

Every dose type is then a closed-form function of each pole (see :func:`pole_response`), so one
event engine serves boluses, infusions (by rate, by duration, NONMEM ``RATE=-1/-2``),
first-order absorption, lag times, bioavailability and steady state (``SS=1``, ``SS=2``,
constant-infusion steady state), and doses are summed (superposition: the system is linear).

Units: time h, amounts mg, rates mg/h, volumes L, clearances L/h, rate constants 1/h. The
engine returns amounts (mg); models divide by the volume and scale to ng/mL.

Degenerate absorption (:math:`k_a` equal to a disposition pole)
---------------------------------------------------------------
The residue formula divides by :math:`k_a - \lambda_j`. When the two agree to a relative
:data:`DEGENERATE_RTOL` (1e-5), the depot pole set uses the symmetric pair
:math:`m \pm \tfrac12 h`, :math:`m = (k_a+\lambda_j)/2`, :math:`h` = 1e-5·λⱼ, instead: the
divided difference of a smooth function around its midpoint differs from the exact confluent
limit (e.g. :math:`k_a D\,u\,e^{-k u}` for one compartment) by :math:`O(h^2 u^2)`, i.e. a
relative error below ~1e-8 for :math:`\lambda u < 30`; gradients stay finite and correct to
:math:`O(h)`. Disposition poles themselves are always distinct when every ``q`` > 0.

Event semantics (NONMEM)
------------------------
* A dose acts only on prediction points of its own ``segment`` (EVID 3/4 and SS=1 records
  reset the system and start a new segment), and at equal times only when its ``seq`` is lower
  than or equal to the point's (implied ADDL doses have seq -1; a dose row's own prediction is
  post-dose). Times within :data:`TIME_TOL` h count as equal.
* Lag time ``lag`` (h) and bioavailability ``F`` of the dose's compartment shift and scale that
  dose. A lagged bolus landing exactly on a point counts as given (post-dose).
* Bolus: amount ``F·AMT`` at ``t_d + lag``.
* Infusion by ``RATE > 0``: rate kept, duration ``F·AMT/RATE``. By ``DUR > 0`` (RATE 0):
  duration kept, rate ``F·AMT/DUR``. ``RATE = -1``: rate from the ``rate_<cmt>`` parameter,
  duration ``F·AMT/rate``. ``RATE = -2``: duration from ``dur_<cmt>``, rate ``F·AMT/dur``.
* ``SS=1`` / ``SS=2``: the steady state of an infinite series of that dose every ``II`` with
  the last one at the record time (each dose lagged), summed in closed form by geometric
  series, including infusions longer than ``II``. SS=1 also resets (its own segment); SS=2
  adds to what is there.
* ``SS=1`` or ``2`` with ``AMT = 0`` and an infusion rate: the steady state of a constant
  infusion at the record time (amounts :math:`R\sum_i c_i/\lambda_i`), after which the system
  decays, as in NONMEM's reference output (the infusion does not continue past the record;
  with a lag it stops at ``t_d + lag``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

#: Times closer than this (h) count as equal (event ordering, lagged doses landing on a point).
TIME_TOL = 1e-8
#: Relative closeness of ka to a disposition pole below which the confluent case is used.
DEGENERATE_RTOL = 1e-5

#: Dose kinds used by :class:`DoseTerms`.
BOLUS, INFUSION, SS_BOLUS, SS_INFUSION, SS_CONSTANT_INFUSION = 0, 1, 2, 3, 4

_EVID_DOSE = (1, 4)


# --------------------------------------------------------------------------------------------
# Disposition: micro-constants, poles, residues
# --------------------------------------------------------------------------------------------
class Disposition(NamedTuple):
    """Micro-constants and poles of a mammillary disposition system (all in 1/h).

    Attributes
    ----------
    k10 : scalar
        Elimination rate constant ``CL/V1``.
    k1p : array [n-1]
        Central → peripheral rate constants ``Qp/V1``.
    kp1 : array [n-1]
        Peripheral → central rate constants ``Qp/Vp``.
    poles : array [n]
        Eigenvalues of ``-K``, largest first (alpha, beta, gamma).
    """

    k10: jnp.ndarray
    k1p: jnp.ndarray
    kp1: jnp.ndarray
    poles: jnp.ndarray


def disposition(cl, v1, q=(), vp=()) -> Disposition:
    """Micro-constants and closed-form poles of a 1-, 2- or 3-compartment disposition.

    Parameters
    ----------
    cl : scalar
        Clearance from the central compartment (L/h).
    v1 : scalar
        Central volume (L).
    q : sequence of scalars, length 0, 1 or 2
        Inter-compartmental clearances (L/h).
    vp : sequence of scalars, same length as ``q``
        Peripheral volumes (L).

    Returns
    -------
    Disposition

    Examples
    --------
    >>> d = disposition(2.0, 10.0, [1.0], [20.0])
    >>> [round(float(x), 6) for x in d.poles]
    [0.318614, 0.031386]
    """
    if len(q) != len(vp) or len(q) > 2:
        raise ValueError(
            f"need as many inter-compartmental clearances as peripheral volumes (0, 1 or 2); "
            f"got {len(q)} clearances and {len(vp)} volumes"
        )
    cl = jnp.asarray(cl, dtype=float)
    v1 = jnp.asarray(v1, dtype=float)
    k10 = cl / v1
    k1p = jnp.stack([jnp.asarray(x, dtype=float) / v1 for x in q]) if q else jnp.zeros(0)
    kp1 = (
        jnp.stack(
            [
                jnp.asarray(x, dtype=float) / jnp.asarray(v, dtype=float)
                for x, v in zip(q, vp, strict=True)
            ]
        )
        if q
        else jnp.zeros(0)
    )
    n = 1 + len(q)
    if n == 1:
        poles = k10[None]
    elif n == 2:
        k12, k21 = k1p[0], kp1[0]
        a = k10 + k12 + k21
        l1 = 0.5 * (a + jnp.sqrt(a * a - 4.0 * k10 * k21))
        poles = jnp.stack([l1, k10 * k21 / l1])
    else:
        k12, k13 = k1p[0], k1p[1]
        k21, k31 = kp1[0], kp1[1]
        a2 = k10 + k12 + k13 + k21 + k31
        a1 = k10 * k21 + k10 * k31 + k21 * k31 + k13 * k21 + k12 * k31
        a0 = k10 * k21 * k31
        # depressed cubic y^3 + p y + r = 0 with lambda = y + a2/3 (three real roots, p < 0)
        p = a1 - a2 * a2 / 3.0
        r = -2.0 * a2**3 / 27.0 + a2 * a1 / 3.0 - a0
        m = jnp.sqrt(-p / 3.0)
        arg = jnp.clip(-r / (2.0 * m**3), -1.0, 1.0)
        phi = jnp.arccos(arg) / 3.0
        l1 = a2 / 3.0 + 2.0 * m * jnp.cos(phi)
        l2 = a2 / 3.0 + 2.0 * m * jnp.cos(phi - 2.0 * jnp.pi / 3.0)
        l3 = a0 / (l1 * l2)
        poles = jnp.stack([l1, l2, l3])
    return Disposition(k10=k10, k1p=k1p, kp1=kp1, poles=poles)


def residues(numerator, poles):
    r"""Partial-fraction coefficients :math:`c_i = N(-\lambda_i)/\prod_{j\ne i}(\lambda_j-\lambda_i)`.

    Parameters
    ----------
    numerator : array [M]
        The numerator polynomial evaluated at ``-poles``.
    poles : array [M]
        Distinct poles (1/h).
    """
    diff = poles[None, :] - poles[:, None]
    diff = jnp.where(jnp.eye(poles.shape[0], dtype=bool), 1.0, diff)
    return numerator / jnp.prod(diff, axis=1)


def _central_dose_numerators(disp: Disposition, at):
    """Numerators of the central-dose transfer functions, evaluated at ``s = -at``.

    Returns ``[S_disp, len(at)]``: row 0 the central amount, row p the peripheral ``p``.
    """
    npp = disp.k1p.shape[0]
    fac = disp.kp1[:, None] - at[None, :]  # (s + kp1) at s = -at, [npp, M]
    central = jnp.prod(fac, axis=0) if npp else jnp.ones_like(at)
    rows = [central]
    for p in range(npp):
        others = [fac[q] for q in range(npp) if q != p]
        prod = jnp.prod(jnp.stack(others), axis=0) if others else jnp.ones_like(at)
        rows.append(disp.k1p[p] * prod)
    return jnp.stack(rows)


def _confluent_safe_depot_poles(ka, poles):
    """Pole set ``[ka', λ'...]`` for depot doses, split symmetrically when ka ≈ a pole."""
    d = ka - poles
    h = DEGENERATE_RTOL * poles
    close = jnp.abs(d) < h
    sign = jnp.where(d >= 0, 1.0, -1.0)
    mid = 0.5 * (ka + poles)
    sep = lax.stop_gradient(sign * h)
    new_poles = jnp.where(close, mid - 0.5 * sep, poles)
    ka_alt = jnp.sum(jnp.where(close, mid + 0.5 * sep, 0.0))
    new_ka = jnp.where(jnp.any(close), ka_alt, ka)
    return jnp.concatenate([new_ka[None], new_poles])


class StateResponse(NamedTuple):
    """Unit-bolus response of one state to a dose into each dose compartment.

    The amount in the state ``u`` hours after a unit bolus into dose compartment ``c`` is
    ``sum_m coef[c, m] * exp(-poles[c, m] * u)``.
    """

    poles: jnp.ndarray  # [C, M]
    coef: jnp.ndarray  # [C, M]


def state_response(disp: Disposition, ka=None, *, state: int = 0) -> StateResponse:
    """Polyexponential unit responses of one state to doses into each dose compartment.

    Parameters
    ----------
    disp : Disposition
    ka : scalar or None
        First-order absorption rate constant (1/h). With ``ka``, the states are
        ``(depot, central, peripheral...)`` and the dose compartments ``(depot, central)``;
        without, the states are ``(central, peripheral...)`` and the only dose compartment is
        the central one.
    state : int
        Index of the state (0-based, in the order above).

    Returns
    -------
    StateResponse
    """
    lam = disp.poles
    if ka is None:
        num = _central_dose_numerators(disp, lam)[state]
        return StateResponse(poles=lam[None, :], coef=residues(num, lam)[None, :])
    ka = jnp.asarray(ka, dtype=float)
    if state == 0:  # the depot: exp(-ka u) after a depot dose, nothing from a central dose
        poles = jnp.stack([ka[None], ka[None]])
        coef = jnp.array([[1.0], [0.0]])
        return StateResponse(poles=poles, coef=coef)
    zd = _confluent_safe_depot_poles(ka, lam)
    num_depot = ka * _central_dose_numerators(disp, zd)[state - 1]
    c_depot = residues(num_depot, zd)
    num_central = _central_dose_numerators(disp, lam)[state - 1]
    c_central = jnp.concatenate([jnp.zeros(1), residues(num_central, lam)])
    z_central = jnp.concatenate([ka[None], lam])  # the ka entry carries a zero coefficient
    return StateResponse(poles=jnp.stack([zd, z_central]), coef=jnp.stack([c_depot, c_central]))


def state_matrix(disp: Disposition, ka=None) -> jnp.ndarray:
    r"""The rate matrix :math:`M` of :math:`\dot A = M A` (1/h), states ``(depot, central,
    peripheral...)`` with ``ka``, ``(central, peripheral...)`` without (the order of
    :func:`state_response`); ``expm(M u) @ A0`` is the state ``u`` hours after amounts ``A0``
    with no dosing in between (e.g. drug carried over an occasion boundary)."""
    npp = disp.k1p.shape[0]
    off = 0 if ka is None else 1
    n = off + 1 + npp
    m = jnp.zeros((n, n))
    m = m.at[off, off].set(-(disp.k10 + jnp.sum(disp.k1p)))
    for p in range(npp):
        q = off + 1 + p
        m = m.at[off, q].set(disp.kp1[p])
        m = m.at[q, off].set(disp.k1p[p])
        m = m.at[q, q].set(-disp.kp1[p])
    if ka is not None:
        ka = jnp.asarray(ka, dtype=float)
        m = m.at[0, 0].set(-ka)
        m = m.at[off, 0].set(ka)
    return m


def state_propagator(disp: Disposition, ka=None):
    r"""``(poles, R)`` with ``expm(M u) = Σ_m exp(-poles[m] u) R[m]`` for :func:`state_matrix`'s
    ``M`` (``R`` ``[n, n, n]``, :func:`propagator`), on the eigenvalues of :math:`-M` (the
    disposition poles, and ``ka`` split from a pole it meets as in the depot responses, which
    leaves an error of the order of that split, ~1e-10 relative)."""
    m = state_matrix(disp, ka)
    poles = disp.poles if ka is None else _confluent_safe_depot_poles(ka, disp.poles)
    return poles, propagator(m, poles)


def propagator(m, poles):
    r"""Sylvester's weights ``R`` ``[n, n, n]`` of a rate matrix ``m`` ``[n, n]`` (1/h):
    ``expm(m u) = Σ_i exp(-poles[i] u) R[i]``, with :math:`R_i = \prod_{j \ne i}
    (m + \lambda_j I)/(\lambda_j - \lambda_i)`.

    ``poles`` are the eigenvalues of ``-m``, pairwise distinct: a linear chain's own poles
    (disposition, metabolite, effect site), split apart where two meet as
    :func:`pkpd.pk.polyexp.convolve` and the depot responses split them; the result is then
    the interpolation of ``exp`` on the split poles, off by about the split (relative). The
    weights are computed once; each time then costs one exponential per pole. This is how
    drug carried over an occasion boundary moves on under the new occasion's parameters.
    """
    m = jnp.asarray(m, dtype=float)
    n = m.shape[0]
    eye = jnp.eye(n)
    rs = []
    for i in range(n):
        r = eye
        for j in range(n):
            if j != i:
                r = r @ (m + poles[j] * eye) / (poles[j] - poles[i])
        rs.append(r)
    return jnp.stack(rs)


def occasion_superpose(
    system,
    doses,
    dose_occ,
    occasions,
    t,
    seq,
    segment,
    occ,
    kinds=None,
    pairs=None,
    states=None,
    carry=None,
):
    """Amounts of a linear system's states at each point with parameters per occasion.

    Parameters are constant within an occasion and change at its first record (NONMEM's
    convention). A point's amount is the superposition of its own occasion's doses under that
    occasion's parameters, plus what was present at the occasion's start (every state: the
    earlier occasions' doses and what they carried) moved on by the occasion's propagator.
    A reset (a new segment: EVID 3/4, SS=1) drops what was carried.

    Parameters
    ----------
    system : callable
        ``system(k) -> (responses, (poles, R))`` for occasion ``k`` (a traced index):
        ``responses`` a sequence of one :class:`StateResponse` per state (amount per unit dose,
        per dose compartment), or one :class:`StateResponse` with coefficients ``[n, C, M]``
        when every state has the same poles (their exponentials are then computed once);
        ``(poles, R)`` the state propagator over the same states (:func:`propagator`).
    doses : DoseTerms
    dose_occ : int array [D]
        Occasion of each dose.
    occasions : tuple of arrays [O]
        ``(start, seq, segment)`` of each occasion's first record.
    t, seq, segment, occ : arrays [P]
        Query times (h), orders, segments and occasions.
    kinds, pairs
        As in :func:`superpose` (``pairs`` for these points, or None).
    states : sequence of int, optional
        The states returned (default all).
    carry : OccasionCarry, optional
        :func:`occasion_carry` of the same arguments, when already computed.

    Returns
    -------
    array [P, len(states)]
    """
    if carry is None:
        carry = occasion_carry(system, doses, dose_occ, occasions, kinds)
    n = carry.poles.shape[1]
    states = tuple(range(n)) if states is None else tuple(states)
    inside = _states_own_occasion(
        carry.responses, states, doses, dose_occ, t, seq, segment, occ, kinds, pairs
    )  # [P, ns]
    return inside + occasion_carried(carry, occasions, t, segment, occ)[:, list(states)]


class OccasionCarry(NamedTuple):
    """A linear system with parameters per occasion (:func:`occasion_carry`): per occasion
    ``[O, ...]``, the state responses (as ``system`` gives them), the propagator's poles and
    weights, and the state carried into the occasion's start (``state``, ``[O, n]``, zero for
    the first)."""

    responses: Any
    poles: jnp.ndarray
    weights: jnp.ndarray
    state: jnp.ndarray


def _states_own_occasion(responses, which, doses, dose_occ, t, seq, segment, occ, kinds, pairs):
    """``[T, len(which)]``: :func:`_own_occasion` of the states ``which``."""
    if isinstance(responses, StateResponse):  # shared poles: coefficients [O, n, C, M]
        r = StateResponse(responses.poles, responses.coef[:, list(which)])
        return _own_occasion(r, doses, dose_occ, t, seq, segment, occ, kinds, pairs)
    return jnp.concatenate(
        [
            _own_occasion(
                StateResponse(responses[i].poles, responses[i].coef[:, None]),
                doses,
                dose_occ,
                t,
                seq,
                segment,
                occ,
                kinds,
                pairs,
            )  # fmt: skip
            for i in which
        ],
        axis=-1,
    )


def _own_occasion(resp, doses, dose_occ, t, seq, segment, occ, kinds=None, pairs=None):
    """``[T, K]``: K states' amounts at each time from the doses of the time's own occasion,
    with that occasion's responses (poles ``[O, C, M]``, coefficients ``[O, K, C, M]``): one
    pass over doses × times, the exponentials shared by the K states."""
    d_occ = jnp.asarray(dose_occ)
    K = resp.coef.shape[1]
    if pairs is not None:
        d, pt = pairs.dose, pairs.point
        o, cidx = occ[pt], doses.cidx[d]
        s = t[pt] - doses.time[d] - doses.lag[d]
        g = dose_pole_response(resp.poles[o, cidx], s[:, None], doses, lambda x: x[d][:, None], kinds)  # fmt: skip
        on = pairs.valid & (d_occ[d] == o)
        g = jnp.where(on[:, None], g, 0.0)
        contrib = jnp.stack([sum_modes(g * resp.coef[o, k, cidx]) for k in range(K)])  # [K, Kp]
        return sum_to_points(jnp.where(on, contrib, 0.0), pairs, t.shape[0]).T
    o, cidx = occ[None, :], doses.cidx[:, None]  # [1, T], [D, 1]
    s = t[None, :] - doses.time[:, None] - doses.lag[:, None]  # [D, T]
    g = dose_pole_response(
        resp.poles[o, cidx], s[:, :, None], doses, lambda x: x[:, None, None], kinds
    )  # [D, T, M]
    on = given_mask(doses, t, seq, segment) & (d_occ[:, None] == occ[None, :])
    g = jnp.where(on[:, :, None], g, 0.0)
    return jnp.stack([jnp.sum(resp.coef[o, k, cidx] * g, axis=(0, 2)) for k in range(K)], -1)


def occasion_carry(system, doses, dose_occ, occasions, kinds=None) -> OccasionCarry:
    """The per-occasion pieces of :func:`occasion_superpose` (arguments as there), with the
    state carried into each occasion's start: what the previous occasion's doses left there
    plus what was carried into it, moved on with its parameters (none across a reset)."""
    b, b_seq, b_seg = (jnp.asarray(x) for x in occasions)
    b = b.astype(float)
    n_occ = b.shape[0]
    responses, (lam, weights) = jax.vmap(system)(jnp.arange(n_occ))  # [O, ...] each
    n = lam.shape[1]

    def step(x_prev, k):
        at = (b[k][None], b_seq[k][None], b_seg[k][None], (k - 1)[None])
        left = _states_own_occasion(responses, range(n), doses, dose_occ, *at, kinds, None)[0]
        moved = jnp.einsum("m,mij,j->i", jnp.exp(-lam[k - 1] * (b[k] - b[k - 1])), weights[k - 1], x_prev)  # fmt: skip
        x = left + jnp.where(b_seg[k] == b_seg[k - 1], moved, 0.0)
        return x, x

    _, xs = lax.scan(step, jnp.zeros(n), jnp.arange(1, n_occ))
    return OccasionCarry(responses, lam, weights, jnp.concatenate([jnp.zeros((1, n)), xs]))


def occasion_carried_output(carry: OccasionCarry, occasions, t, segment, occ, weights):
    """``[T]``: one linear output ``Σ_i weights[o, i]·x_i`` (weights ``[O, n]`` per occasion)
    of :func:`occasion_carried`, with the propagator contracted once per occasion instead of
    once per time."""
    b, _, b_seg = (jnp.asarray(x) for x in occasions)
    b = b.astype(float)
    w = jnp.einsum("omij,oj,oi->om", carry.weights, carry.state, weights)  # [O, n]
    tau = jnp.maximum(t - b[occ], 0.0)
    now = jnp.sum(jnp.exp(-carry.poles[occ] * tau[:, None]) * w[occ], axis=-1)
    on = (occ > 0) & (segment == b_seg[occ])
    return jnp.where(on, now, 0.0)


def occasion_carried(carry: OccasionCarry, occasions, t, segment, occ):
    """``[T, n]``: the state carried into each time's occasion, moved on to the time with the
    occasion's parameters (zero in the first occasion and after a reset within it)."""
    b, _, b_seg = (jnp.asarray(x) for x in occasions)
    b = b.astype(float)
    tau = jnp.maximum(t - b[occ], 0.0)
    decay = jnp.exp(-carry.poles[occ] * tau[:, None])  # [T, n]
    now = jnp.einsum("tm,tmij,tj->ti", decay, carry.weights[occ], carry.state[occ])
    on = (occ > 0) & (segment == b_seg[occ])
    return jnp.where(on[:, None], now, 0.0)


def occasion_at(subject, t):
    """The occasion each time ``t`` falls in (``[T]`` int): the last real occasion starting
    at or before it (an occasion's first time belongs to it), the first before any."""
    start = jnp.asarray(subject.occ_start, dtype=float)
    later = jnp.asarray(subject.occ_valid)[1:] & (start[1:][None, :] <= t[:, None] + TIME_TOL)
    return jnp.sum(later, axis=1).astype(jnp.int32)


# --------------------------------------------------------------------------------------------
# Doses
# --------------------------------------------------------------------------------------------
class DoseTerms(NamedTuple):
    """Each dose event reduced to what the polyexponential response needs (all ``[D]``).

    Attributes
    ----------
    time : record time (h).
    lag : lag time (h) of the dose's compartment.
    amount : bolus amount ``F·AMT`` (mg).
    rate : infusion rate (mg/h).
    duration : infusion duration (h).
    tau : dosing interval II for steady state (h); 1 where unused.
    kind : :data:`BOLUS`, :data:`INFUSION`, :data:`SS_BOLUS`, :data:`SS_INFUSION` or
        :data:`SS_CONSTANT_INFUSION`.
    cidx : index of the dose compartment in the model's dose compartments.
    active : a real dose (EVID 1/4, not padding).
    seq, segment : ordering at equal times and reset segments (see :mod:`pkpd.data.arrays`).
    """

    time: jnp.ndarray
    lag: jnp.ndarray
    amount: jnp.ndarray
    rate: jnp.ndarray
    duration: jnp.ndarray
    tau: jnp.ndarray
    kind: jnp.ndarray
    cidx: jnp.ndarray
    active: jnp.ndarray
    seq: jnp.ndarray
    segment: jnp.ndarray


def _per_dose(value, n: int, name: str):
    v = jnp.asarray(value, dtype=float)
    if v.ndim == 0:
        return jnp.broadcast_to(v, (n,))
    if v.shape == (n,):
        return v
    raise ValueError(
        f"parameter {name!r} has shape {tuple(v.shape)}; expected a scalar or one value per "
        f"dose event, shape ({n},) (e.g. a data column read on each dose's record, "
        f"SubjectData.dose_cov[:, k])"
    )


def dose_terms(
    subject,
    modifiers: Mapping[str, Mapping[str, object]],
    dose_compartments: Mapping[int, int],
    default_compartment: int,
) -> DoseTerms:
    """Turn one subject's dose records into :class:`DoseTerms`.

    Parameters
    ----------
    subject : SubjectData (one subject, no leading axis)
        Uses ``dose_time, dose_amt, dose_rate, dose_dur, dose_ii, dose_cmt, dose_ss, dose_evid,
        dose_seq, dose_segment, dose_mask``.
    modifiers : mapping
        For each dose-compartment index ``c`` (0, 1, ...), a mapping with optional keys
        ``lag`` (h, default 0), ``f`` (fraction, default 1), ``dur`` (h, for RATE=-2) and
        ``rate`` (mg/h, for RATE=-1); each value a scalar or an array ``[D]`` read on each
        dose's record. A RATE=-1/-2 dose without its parameter gives NaN.
    dose_compartments : mapping
        NONMEM compartment number → dose-compartment index.
    default_compartment : int
        Index used for ``CMT 0``.

    Notes
    -----
    Doses into a compartment that is not a dose compartment of the model give NaN (loud on
    purpose); check the data with the model's ``check_subject`` first.
    """
    D = subject.dose_time.shape[0]
    cmt = jnp.asarray(subject.dose_cmt)
    cidx = jnp.full(cmt.shape, default_compartment, dtype=jnp.int32)
    known = cmt == 0
    for number, idx in dose_compartments.items():
        cidx = jnp.where(cmt == number, idx, cidx)
        known = known | (cmt == number)
    n_c = len(set(dose_compartments.values()) | {default_compartment})

    def pick(key, default):
        vals = [
            _per_dose(modifiers.get(c, {}).get(key, default), D, f"{key} (compartment {c})")
            for c in range(n_c)
        ]
        return jnp.take_along_axis(jnp.stack(vals), cidx[None, :], axis=0)[0]

    lag = pick("lag", 0.0)
    f = pick("f", 1.0)
    p_dur = pick("dur", jnp.nan)
    p_rate = pick("rate", jnp.nan)

    evid = jnp.asarray(subject.dose_evid)
    is_dose = jnp.asarray(subject.dose_mask) & ((evid == 1) | (evid == 4))
    amt = jnp.where(is_dose, jnp.asarray(subject.dose_amt, dtype=float), 0.0)
    famt = f * amt
    r = jnp.asarray(subject.dose_rate, dtype=float)
    dur = jnp.asarray(subject.dose_dur, dtype=float)
    by_rate = r > 0
    by_dur = (r == 0) & (dur > 0)
    by_prate = r == -1
    by_pdur = r == -2
    is_inf = by_rate | by_dur | by_prate | by_pdur

    one = jnp.ones_like(famt)
    safe_r = jnp.where(by_rate, r, one)
    safe_dur = jnp.where(by_dur, dur, one)
    safe_pr = jnp.where(by_prate, p_rate, one)
    safe_pd = jnp.where(by_pdur, p_dur, one)
    rate = jnp.select(
        [by_rate, by_dur, by_prate, by_pdur],
        [safe_r, famt / safe_dur, safe_pr, famt / safe_pd],
        0.0,
    )
    duration = jnp.select(
        [by_rate, by_dur, by_prate, by_pdur],
        [famt / safe_r, safe_dur, famt / safe_pr, safe_pd],
        0.0,
    )
    rate = jnp.where(is_dose, rate, 0.0)
    duration = jnp.where(is_dose, duration, 0.0)

    ss = jnp.asarray(subject.dose_ss)
    is_ss = (ss == 1) | (ss == 2)
    const = is_ss & is_inf & (amt == 0)
    kind = jnp.where(
        is_ss,
        jnp.where(const, SS_CONSTANT_INFUSION, jnp.where(is_inf, SS_INFUSION, SS_BOLUS)),
        jnp.where(is_inf, INFUSION, BOLUS),
    )
    needs_tau = (kind == SS_BOLUS) | (kind == SS_INFUSION)
    ii = jnp.asarray(subject.dose_ii, dtype=float)
    tau = jnp.where(needs_tau & is_dose, jnp.where(ii > 0, ii, jnp.nan), 1.0)
    # doses into a compartment the model cannot dose: NaN amount (see Notes)
    bad = is_dose & ~known
    famt = jnp.where(bad, jnp.nan, famt)
    return DoseTerms(
        time=jnp.asarray(subject.dose_time, dtype=float),
        lag=lag,
        amount=jnp.where(is_inf, 0.0, famt),
        rate=jnp.where(bad, jnp.nan, rate),
        duration=duration,
        tau=tau,
        kind=kind,
        cidx=cidx,
        active=is_dose,
        seq=jnp.asarray(subject.dose_seq),
        segment=jnp.asarray(subject.dose_segment),
    )


# --------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------
def _neg_expm1(x):
    """``1 - exp(-x)`` without cancellation."""
    return -jnp.expm1(-x)


def pole_response(lam, s, amount, rate, duration, tau, kind, kinds=None):
    r"""Response of one exponential mode :math:`e^{-\lambda u}` to one dose (broadcasting).

    Parameters
    ----------
    lam : array
        Pole :math:`\lambda` (1/h), > 0.
    s : array
        Time since the lagged dose, :math:`s = t - t_d - \text{lag}` (h).
    amount, rate, duration, tau, kind : arrays
        As in :class:`DoseTerms`.

    Returns
    -------
    array
        :math:`g` such that a state amount is :math:`\sum_m c_m g(\lambda_m)`:

        * bolus: :math:`A e^{-\lambda s}` for :math:`s \ge 0`;
        * infusion (rate R, duration T):
          :math:`R\, e^{-\lambda (s-T)^+}\,(1 - e^{-\lambda\,\mathrm{clip}(s,0,T)})/\lambda`;
        * steady-state bolus (doses at :math:`-k\tau`, :math:`k \ge 0`):
          :math:`A e^{-\lambda w}/(1-r)`, :math:`r = e^{-\lambda\tau}`,
          :math:`w = s + k_0\tau`, :math:`k_0 = \max(0, \lceil -s/\tau\rceil)` the first dose
          already given (several may still be pending when the lag exceeds :math:`\tau`);
        * steady-state infusion: with :math:`u_k = s + k\tau`, :math:`k_1` the first
          :math:`k \ge k_0` with :math:`u_k \ge T` and :math:`n = k_1 - k_0` infusions running,
          :math:`\frac{R}{\lambda}\Big[n - e^{-\lambda u_{k_0}}\frac{1-r^n}{1-r}
          + e^{-\lambda(u_{k_1}-T)}\frac{1-e^{-\lambda T}}{1-r}\Big]`;
        * constant-infusion steady state stopped at :math:`s = 0`:
          :math:`R e^{-\lambda s^+}/\lambda`.

    kinds : tuple of int, optional
        The dose kinds that can occur (static; :func:`kinds_in_data`). Only their formulas
        are computed, which makes data without steady-state doses several times cheaper
        (fewer exponentials, forward and in gradients). ``None``: every kind.
    """
    if kinds is not None and set(kinds) <= {BOLUS, INFUSION}:
        parts = []
        if BOLUS in kinds:
            b = jnp.where(s >= -TIME_TOL, amount * jnp.exp(-lam * jnp.maximum(s, 0.0)), 0.0)
            parts.append((BOLUS, b))
        if INFUSION in kinds:
            i = (
                rate
                * jnp.exp(-lam * jnp.maximum(s - duration, 0.0))
                * _neg_expm1(lam * jnp.clip(s, 0.0, duration))
                / lam
            )
            parts.append((INFUSION, i))
        if len(parts) == 1:
            return parts[0][1]
        return jnp.where(kind == BOLUS, parts[0][1], parts[1][1])
    sp = jnp.maximum(s, 0.0)
    decay = jnp.exp(-lam * sp)
    bolus = jnp.where(s >= -TIME_TOL, amount * decay, 0.0)
    infusion = (
        rate
        * jnp.exp(-lam * jnp.maximum(s - duration, 0.0))
        * _neg_expm1(lam * jnp.clip(s, 0.0, duration))
        / lam
    )
    const = rate * decay / lam
    one_minus_r = _neg_expm1(lam * tau)
    k0 = jnp.maximum(0.0, jnp.ceil((-s - TIME_TOL) / tau))
    w = jnp.maximum(s + k0 * tau, 0.0)
    ss_bolus = amount * jnp.exp(-lam * w) / one_minus_r
    k1 = jnp.maximum(k0, jnp.ceil((duration - s) / tau))
    n = k1 - k0
    u1 = jnp.maximum(s + k1 * tau - duration, 0.0)
    running = n - jnp.exp(-lam * w) * _neg_expm1(lam * tau * n) / one_minus_r
    ended = jnp.exp(-lam * u1) * _neg_expm1(lam * duration) / one_minus_r
    ss_infusion = rate * (running + ended) / lam
    return jnp.select(
        [kind == BOLUS, kind == INFUSION, kind == SS_BOLUS, kind == SS_INFUSION],
        [bolus, infusion, ss_bolus, ss_infusion],
        const,
    )


def dose_pole_response(lam, s, doses: DoseTerms, expand, kinds=None):
    """:func:`pole_response` with each dose field passed through ``expand`` (a gather or a
    broadcast that lines the doses up with ``lam`` and ``s``)."""
    fields = (doses.amount, doses.rate, doses.duration, doses.tau, doses.kind)
    return pole_response(lam, s, *(expand(x) for x in fields), kinds)


def given_mask(doses: DoseTerms, t, seq, segment):
    """``[D, P]``: dose ``d`` acts on point ``p`` (same segment, not later; seq at equal times)."""
    dt = t[None, :] - doses.time[:, None]
    same_time = jnp.abs(dt) <= TIME_TOL
    order = (dt > TIME_TOL) | (same_time & (doses.seq[:, None] <= seq[None, :]))
    return doses.active[:, None] & (doses.segment[:, None] == segment[None, :]) & order


def host_active_doses(subjects) -> np.ndarray:
    """``[S, D]`` numpy: real dose events (EVID 1/4, not padding) of padded subjects."""
    return np.asarray(subjects.dose_mask) & np.isin(np.asarray(subjects.dose_evid), _EVID_DOSE)


def host_given_mask(subjects) -> np.ndarray:
    """``[S, D, P]`` numpy: :func:`given_mask` for padded subjects, computed once on the host
    (it depends on the data only)."""
    dt = (
        np.asarray(subjects.point_time, dtype=float)[:, None, :]
        - np.asarray(subjects.dose_time, dtype=float)[:, :, None]
    )
    d_seq = np.asarray(subjects.dose_seq)[:, :, None]
    p_seq = np.asarray(subjects.point_seq)[:, None, :]
    order = (dt > TIME_TOL) | ((np.abs(dt) <= TIME_TOL) & (d_seq <= p_seq))
    seg = (
        np.asarray(subjects.dose_segment)[:, :, None]
        == np.asarray(subjects.point_segment)[:, None, :]
    )
    return host_active_doses(subjects)[:, :, None] & seg & order


def kinds_in_data(subjects) -> tuple[int, ...] | None:
    """The dose kinds padded data can hold, for :func:`pole_response`'s ``kinds``.

    ``None`` (every kind) when any dose is a steady-state dose or the data reset any
    compartment (EVID 3/4, segments); otherwise the subset of ``(BOLUS, INFUSION)`` present
    (RATE or DUR, modelled or given, make an infusion). Models may use a non-``None`` value
    to take exact shortcuts that assume neither.
    """
    mask = host_active_doses(subjects)
    if np.any(np.asarray(subjects.dose_ss)[mask] != 0):
        return None
    if np.any(np.asarray(subjects.dose_segment) != 0) or np.any(
        np.asarray(subjects.point_segment) != 0
    ):
        return None
    r = np.asarray(subjects.dose_rate)[mask]
    d = np.asarray(subjects.dose_dur)[mask]
    inf = (r != 0) | (d > 0)
    out = tuple(k for k, present in ((BOLUS, np.any(~inf)), (INFUSION, np.any(inf))) if present)
    return out or (BOLUS,)


class PairLayout(NamedTuple):
    """The (dose, point) pairs in which a dose acts on a prediction point, listed.

    The given-mask of :func:`given_mask` depends on the data only (record times, orders,
    segments), so it can be computed once per dataset: evaluating responses on these pairs
    instead of on every dose × point skips the pairs that contribute nothing (doses after the
    point, other segments, padding). All arrays ``[K]`` for one subject (``[S, K]`` padded):

    Attributes
    ----------
    dose, point : int arrays
        Dose slot and point slot of each pair.
    valid : bool array
        A real pair (padding pairs point at slot 0 and contribute zero).
    """

    dose: np.ndarray
    point: np.ndarray
    valid: np.ndarray


def pair_layout(subjects) -> PairLayout:
    """The :class:`PairLayout` of padded subjects (``SubjectData`` with a leading subject axis).

    A pair is listed when :func:`given_mask` holds and the point is a real record
    (``point_valid``); padded points then predict 0.
    """
    given = host_given_mask(subjects) & np.asarray(subjects.point_valid)[:, None, :]
    S = given.shape[0]
    K = max(1, int(given.reshape(S, -1).sum(axis=1).max(initial=0)))
    dose = np.zeros((S, K), dtype=np.int32)
    point = np.zeros((S, K), dtype=np.int32)
    valid = np.zeros((S, K), dtype=bool)
    for i in range(S):
        di, pi = np.nonzero(given[i])
        dose[i, : len(di)] = di
        point[i, : len(pi)] = pi
        valid[i, : len(di)] = True
    return PairLayout(dose=dose, point=point, valid=valid)


def pair_responses(poles, doses: DoseTerms, t, pairs: PairLayout, kinds=None):
    """Mode responses ``g`` ``[K, M]`` of each listed pair (zero for padding pairs).

    ``poles`` ``[C, M]`` per dose compartment; returns also the pairs' dose compartments.
    """
    d = pairs.dose
    s = t[pairs.point] - doses.time[d] - doses.lag[d]  # [K]
    cidx = doses.cidx[d]
    g = dose_pole_response(poles[cidx], s[:, None], doses, lambda x: x[d][:, None], kinds)
    return jnp.where(pairs.valid[:, None], g, 0.0), cidx


def sum_modes(x):
    """Sum over the last (mode) axis, written as additions of its few slices: XLA's CPU backend
    sends small reductions to a library kernel that cost several times more here."""
    out = x[..., 0]
    for m in range(1, x.shape[-1]):
        out = out + x[..., m]
    return out


def sum_to_points(contrib, pairs: PairLayout, n_points: int):
    """Sum pair contributions ``[..., K]`` into their points, ``[..., P]``."""
    # a scatter-add: on CPU, batched over subjects, several times cheaper (forward and
    # gradient) than a product with a one-hot matrix or a masked sum
    c = jnp.where(pairs.valid, contrib, 0.0)
    return jnp.zeros(c.shape[:-1] + (n_points,), c.dtype).at[..., pairs.point].add(c)


def superpose(response: StateResponse, doses: DoseTerms, t, seq, segment, kinds=None, pairs=None):
    """Amount in one state at each point, summed over doses and poles (mg, ``[P]``).

    Parameters
    ----------
    response : StateResponse
        Poles and coefficients of the state, per dose compartment.
    doses : DoseTerms
    t, seq, segment : arrays [P]
        Point times (h), orders and segments.
    kinds : tuple of int, optional
        See :func:`pole_response`.
    pairs : PairLayout, optional
        The pairs of these points and doses (:func:`pair_layout`): only those are evaluated
        (same values at real points; padded points give 0).

    One response of :func:`superpose_many` (the one superposition of pkpd).
    """
    return superpose_many(
        response.poles, response.coef[None], doses, t, seq, segment, kinds, pairs
    )[0]


def superpose_many(poles, coefs, doses: DoseTerms, t, seq, segment, kinds=None, pairs=None):
    """Several responses that share one set of poles, in one pass over doses and points.

    Parameters
    ----------
    poles : array [C, M]
        Poles per dose compartment.
    coefs : array [K, C, M]
        Coefficients of K responses on those poles (zero where a response lacks a pole).
    doses, t, seq, segment, kinds, pairs
        As in :func:`superpose`.

    Returns
    -------
    array [K, P]
        Equal to ``superpose`` of each response, with the exponentials computed once.
    """
    if pairs is not None:
        g, cidx = pair_responses(poles, doses, t, pairs, kinds)  # [Kp, M]
        # one row per response, no broadcast over responses: its gradient would be a small
        # reduction, which XLA's CPU backend runs slowly (see sum_modes)
        contrib = jnp.stack(
            [sum_modes(coefs[k][cidx] * g) for k in range(coefs.shape[0])]
        )  # [K, Kp]
        return sum_to_points(contrib, pairs, t.shape[0])
    p = poles[doses.cidx]  # [D, M]
    s = t[None, :] - doses.time[:, None] - doses.lag[:, None]  # [D, P]
    g = dose_pole_response(
        p[:, None, :], s[:, :, None], doses, lambda x: x[:, None, None], kinds
    )  # [D, P, M]
    mask = given_mask(doses, t, seq, segment)
    g = jnp.where(mask[:, :, None], g, 0.0)
    c = coefs[:, doses.cidx, :]  # [K, D, M]
    return jnp.einsum("kdm,dpm->kp", c, g)
