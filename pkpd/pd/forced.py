r"""Turnover models driven by a known concentration, solved on a fixed, dose-aware grid.

Indirect-response and bounded-turnover models are *linear in their own state* once the drug
concentration :math:`C(t)` is known::

    dy_j/dt = a_j(t) − b_j(t)·y_j            (a_j, b_j functions of C(t) and parameters)

e.g. IDR I: ``a = kin·(1 − I(C))``, ``b = kout``; bounded turnover of a percentage:
``a = 100·g``, ``b = g + kout`` with ``g = kin·(1 − I(C))``. With ``C`` in closed form (the PK
is linear), each step of an exponential integrator (:func:`exponential_affine`) is an
*affine* map ``y_{k+1} = A_k·y_k + B_k`` whose coefficients need only ``a`` and ``b`` at the
step's start, middle and end, all known before integrating. So the whole solve is: one vectorised evaluation
of the concentration on the grid, then an associative scan composing the affine maps. There is
no step-size control to differentiate through, which makes gradients inside NUTS cheap
(milliseconds instead of seconds for an adaptive ODE solver over a population).

Accuracy comes from the grid (:func:`dose_grid`): every dose time and infusion end is a node (the
concentration has kinks there, and a quadratic follows it only between kinks), nodes are dense just
after each dose where the concentration changes fastest and sparse later, and a uniform grid
bounds the longest step. The tests compare with scipy's Radau at tight tolerances: within 1e-5
relative at the typical temsirolimus parameters (measured 6.0e-6), 3e-4 at the priors' extremes
(measured 1.4e-4). 1e-5 is enough for the likelihood (see :data:`DEFAULT_OFFSETS`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

#: Node offsets (h) after the end of each infusion (or bolus): dense where C falls fastest,
#: roughly geometric after that. With the exponential step (:func:`exponential_affine`) this
#: grid is within 1e-5 of scipy's Radau at the typical temsirolimus parameters (measured 6.0e-6
#: for VEGF, 2.4e-6 for PD-1 over 12 weekly doses; 1.9e-6 and 8.9e-7 over three doses) and
#: within 3e-4 at the prior's extremes (measured 1.4e-4; tests/models/test_temsirolimus_model.py).
#: 1e-6 is reachable (benchmarks/RESULTS.md, 2026-12-03): the error comes from the steps
#: 0.003 -> 0.03 -> 0.25 h into the first infusion (nodes at 0.01 and 0.1 h fix them), the
#: 8 -> 24 h step (a node at 16 h) and the uniform grid's ~65 h steps late after a dose, where
#: ``I(C)`` bends as C nears the IC50 (64 uniform nodes); that grid (13 nodes a dose, 64
#: uniform) is within 6.3e-7, but costs 28% more per gradient of the full fit, for a
#: likelihood change of ~0.002 (a 1e-5 relative error moves the log-likelihood of the bundled
#: data by at most ~0.02, with VEGF's 45% and PD-1's logit residual SDs; a posterior SD of
#: vegf_base is thousands of times larger), so the default stays at 1e-5.
#: The 29 nodes per dose and 64 uniform ones the RK4 step needed made the gradient of the full
#: joint fit (benchmarks/RESULTS.md, 2026-12-01) cost 25 ms instead of 5.9.
DEFAULT_OFFSETS = (0.25, 1.0, 3.0, 8.0, 24.0, 72.0)
#: Nodes inside each infusion, as fractions of its duration.
INFUSION_FRACTIONS = (0.5,)
#: Nodes just after each infusion starts (h, capped at its end): with potent drugs (IC50 far
#: below Cmax) the effect switches on within minutes of the start (the steps 0.003 -> 0.03 ->
#: 0.25 h, growing 10×, cost 1.8e-6 of VEGF at the typical values; 3× steps cost 1e-7).
START_OFFSETS = (0.003, 0.03)
#: Nodes just after a bolus or an oral dose (h), in the slots an infusion's start and middle
#: nodes take (the grid's size is the same): a concentration that jumps or rises within minutes
#: crosses the PD potencies there (an oral dose's indirect response, driven by the parent, was
#: 2.6e-4 off scipy 0.5 h after the dose with the first node at 0.25 h).
BOLUS_OFFSETS = (0.01, 0.04, 0.1)


def dose_grid(dose_time, dose_end, active, t_eval, *, n_uniform=32, offsets=DEFAULT_OFFSETS):
    """Grid nodes for a forced-turnover solve, and where the evaluation times sit in it.

    Parameters
    ----------
    dose_time, dose_end : arrays [D]
        Start and end (h) of each dose's input (end = start for a bolus).
    active : bool array [D]
        Real doses (padding is ignored).
    t_eval : array [P]
        Times (h) where the solution is wanted.
    n_uniform : int
        Uniform nodes between the start and the last evaluation time (bounds the step; 32
        over 2100 h leave 68 h steps late after a dose, which cost 6e-6 of VEGF; 64 leave
        3e-7).
    offsets : tuple of float
        Nodes after each dose's end (h).

    Returns
    -------
    nodes : array [N]
        Sorted node times, starting at ``t0 = min(0, min(t_eval))``.
    index : int array [P]
        Position of each ``t_eval`` in ``nodes``.
    start_index : int array [D]
        Position of each dose's start in ``nodes``.
    """
    t_eval = jnp.asarray(t_eval, dtype=float)
    t0 = jnp.minimum(0.0, jnp.min(t_eval))
    t1 = jnp.max(t_eval)
    off = jnp.asarray((0.0, *offsets))
    frac = jnp.asarray(INFUSION_FRACTIONS)
    inside = dose_time[:, None] + frac[None, :] * (dose_end - dose_time)[:, None]
    early = jnp.minimum(dose_time[:, None] + jnp.asarray(START_OFFSETS)[None, :], dose_end[:, None])
    inside = jnp.concatenate([early, inside], axis=1)
    after_bolus = dose_time[:, None] + jnp.asarray(BOLUS_OFFSETS)[None, :]
    inside = jnp.where((dose_end <= dose_time)[:, None], after_bolus, inside)
    per_dose = jnp.concatenate(
        [dose_time[:, None], inside, dose_end[:, None] + off[None, :]], axis=1
    )
    per_dose = jnp.where(active[:, None], per_dose, t0)
    per_dose = jnp.clip(per_dose, t0, t1)
    uniform = jnp.linspace(t0, t1, n_uniform)
    allt = jnp.concatenate([uniform, per_dose.ravel(), t_eval])
    order = jnp.argsort(allt, stable=True)
    nodes = allt[order]
    # the inverse permutation by a scatter (a second sort cost as much as the first)
    inverse = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
    index = inverse[allt.shape[0] - t_eval.shape[0] :]
    start_index = inverse[n_uniform + jnp.arange(dose_time.shape[0]) * per_dose.shape[1]]
    return nodes, index, start_index


def linear_state_on_grid(response, doses, nodes, start_index):
    """A linear PK state (sum of exponential modes) at every node and step midpoint, exactly.

    For data with bolus and infusion doses only and no resets (the fast path a fit selects by
    :func:`pkpd.pk.analytic.kinds_in_data`): every infusion start and end is a node, so the
    input rate is constant on each step and each mode follows
    ``x_{k+1} = e^{−λh}(x_k + bolus_k) + R_k(1 − e^{−λh})/λ`` — an affine recurrence composed
    by an associative scan, costing O(nodes × modes) instead of O(nodes × doses × modes).

    Parameters
    ----------
    response : StateResponse
        Poles and coefficients ``[C, M]`` of the state per dose compartment.
    doses : DoseTerms
    nodes : array [N]
    start_index : int array [D]
        Node of each dose's (lagged) start (from :func:`dose_grid`).

    Returns
    -------
    at_nodes : array [N]
        Values just after any bolus given at the node.
    at_mid : array [N − 1]
        Values at the step midpoints.
    """
    from pkpd.pk import analytic

    lam = response.poles  # [C, M]
    C = lam.shape[0]
    onehot = (doses.cidx[:, None] == jnp.arange(C)[None, :]).astype(float)  # [D, C]
    start = doses.time + doses.lag
    infusion = doses.kind == analytic.INFUSION
    end = start + jnp.where(infusion, doses.duration, 0.0)
    t0 = nodes[0]
    # modes at t0 from doses strictly before t0 (those at t0 enter through the recurrence)
    s0 = t0 - start
    before = doses.active & (s0 > analytic.TIME_TOL)
    g0 = analytic.pole_response(
        lam[doses.cidx],
        s0[:, None],
        doses.amount[:, None],
        doses.rate[:, None],
        doses.duration[:, None],
        doses.tau[:, None],
        doses.kind[:, None],
        (analytic.BOLUS, analytic.INFUSION),
    )  # fmt: skip  [D, M]
    # sums over doses by broadcasting, not matrix products: batched over subjects, XLA's CPU
    # dot kernels cost far more than these fused loops at such sizes
    x0 = jnp.sum(onehot[:, :, None] * jnp.where(before[:, None], g0, 0.0)[:, None, :], axis=0)
    h = jnp.diff(nodes)
    mid = nodes[:-1] + 0.5 * h
    on = (
        doses.active[None, :]
        & infusion[None, :]
        & (start[None, :] <= mid[:, None])
        & (mid[:, None] < end[None, :])
    )  # fmt: skip  [N-1, D]
    rate = jnp.sum((on * doses.rate[None, :])[:, :, None] * onehot[None], axis=1)  # [N-1, C]
    bolus = doses.active & (doses.kind == analytic.BOLUS) & (start >= t0 - analytic.TIME_TOL)
    B = (
        jnp.zeros((nodes.shape[0], C))
        .at[start_index]
        .add(jnp.where(bolus, doses.amount, 0.0)[:, None] * onehot)
    )  # [N, C]
    # half-step decay and gain; the full step's follow without another exp or expm1:
    # e^{-λh} = (e^{-λh/2})², (1 − e^{-λh})/λ = (1 − e^{-λh/2})(1 + e^{-λh/2})/λ
    Eh = jnp.exp(-lam[None] * 0.5 * h[:, None, None])  # [N-1, C, M]
    gain_h = -jnp.expm1(-lam[None] * 0.5 * h[:, None, None]) / lam[None]
    E = Eh * Eh
    gain = gain_h * (1.0 + Eh)
    A = E.reshape(E.shape[0], -1)
    Bk = (E * B[:-1, :, None] + rate[:, :, None] * gain).reshape(E.shape[0], -1)
    xs = solve_affine(x0.reshape(-1), A, Bk).reshape(nodes.shape[0], C, -1)  # before boluses
    post = xs + B[:, :, None]
    xm = Eh * post[:-1] + rate[:, :, None] * gain_h
    coef = response.coef[None]
    return jnp.sum(coef * post, axis=(1, 2)), jnp.sum(coef * xm, axis=(1, 2))


#: Taylor coefficients of J_n(z) in powers of -z: 1 / (k! (n + k + 1)), n = 0..3, k = 0..8.
_SERIES = tuple(tuple(1.0 / (math.factorial(k) * (n + k + 1)) for k in range(9)) for n in range(4))


def _moments(z, count=4):
    r"""``J_n(z) = ∫_0^1 exp(−z·u)·u^n du`` for n = 0 .. count − 1 ≤ 3 (z ≥ 0).

    Above z = 0.1 by the recurrence ``J_n = (n·J_{n−1} − e^{−z}) / z`` from ``J_0 = (1 − e^{−z})/z``
    (its cancellation costs at most ~1e-13 there); below, by the Taylor series (9 terms:
    remainder below 1e-14 at z = 0.1). Both branches see safe arguments.
    """
    small = z < 0.1
    x = -jnp.where(small, z, 0.0)
    series = []
    for coeffs in _SERIES[:count]:
        acc = coeffs[-1]
        for c in coeffs[-2::-1]:
            acc = acc * x + c
        series.append(acc)
    zl = jnp.where(small, 1.0, z)
    e = jnp.exp(-zl)
    closed = [-jnp.expm1(-zl) / zl]
    for n in range(1, count):
        closed.append((n * closed[-1] - e) / zl)
    return [jnp.where(small, s_, c_) for s_, c_ in zip(series, closed, strict=True)]


@jax.custom_jvp
def _exp_moments(z):
    """``(J_0, J_1, J_2)`` of :func:`_moments`, differentiated by ``dJ_n/dz = −J_{n+1}``
    (instead of through both branches)."""
    return tuple(_moments(z, 3))


@_exp_moments.defjvp
def _exp_moments_jvp(primals, tangents):
    (z,), (dz,) = primals, tangents
    j = _moments(z)
    return tuple(j[:3]), tuple(-jn * dz for jn in j[1:])


def exponential_affine(a, b, h):
    r"""One exponential-integrator step of ``y' = a(t) − b(t)·y`` as ``y+ = A·y + B``.

    On a step of length :math:`h` the decay rate is frozen at its Simpson mean
    :math:`\bar b = (b_0 + 4 b_m + b_1)/6` and the production :math:`a` is the quadratic through
    its values at the start, middle and end; the step is then integrated exactly:
    :math:`A = e^{-\bar b h}` and :math:`B = \int_0^h e^{-\bar b (h-s)} a(s)\,ds
    = h\,(w_0 a_0 + w_m a_m + w_1 a_1)` with weights from
    :math:`J_n(z) = \int_0^1 e^{-zu} u^n du`, :math:`z = \bar b h`:
    :math:`w_0 = 2J_2 − J_1`, :math:`w_m = 4(J_1 − J_2)`, :math:`w_1 = J_0 − 3J_1 + 2J_2`
    (Simpson's 1/6, 2/3, 1/6 at :math:`z = 0`). Where :math:`b` varies over the step (PD-1's
    decay depends on the drug), the midpoint value is weighted by the integrating factor's
    departure from the frozen one there, :math:`r_m = e^{h (b_0 − b_1)/8}` (exact for a
    quadratic :math:`b`; its exponent is clipped to ±1, reached only far outside the grid's
    design). Unlike an explicit Runge–Kutta step it is
    stable for any step length (:math:`0 < A \le 1`), and exact where :math:`b` is constant
    (VEGF's ``kout``) and :math:`a` quadratic; the error comes from how well a quadratic follows
    the drug effect over the step, which the dose-aware grid controls.

    Parameters
    ----------
    a, b : triples of arrays [..., J]
        Values at the step's start, middle and end (``b >= 0``); three arrays, not one
        stacked ``[..., 3, J]`` (stacking them only to slice them apart cost a third of the
        step's gradient: XLA's CPU loops vectorise over the tiny last axis).
    h : array [...]
        Step lengths.
    """
    h = h[..., None]
    a0, am, a1 = a
    b0, bm, b1 = b
    z = (b0 + 4.0 * bm + b1) / 6.0 * h
    j0, j1, j2 = _exp_moments(z)
    A = jnp.exp(-z)
    rm = jnp.exp(jnp.clip(h * (b0 - b1) / 8.0, -1.0, 1.0))
    B = h * ((2.0 * j2 - j1) * a0 + 4.0 * (j1 - j2) * am * rm + (j0 - 3.0 * j1 + 2.0 * j2) * a1)
    return A, B


def solve_affine(y0, A, B, method=None):
    """States at every node: ``y_0 = y0``, ``y_{k+1} = A_k·y_k + B_k``.

    ``method``: ``"sequential"`` (a ``lax.scan`` over the steps) or ``"associative"`` (a
    parallel prefix, ``lax.associative_scan``, O(log N) depth); by default sequential on CPU,
    where batched over subjects each step is one fused loop body and the prefix's log-depth
    slicing costs more (gradient of the bundled VEGF group, 111 subjects × 129 steps × 2
    states: 0.17 ms against 0.47; benchmarks/RESULTS.md 2026-12-02c), associative elsewhere.

    Returns an array ``[N, J]`` (N = number of steps + 1).
    """
    if method is None:
        method = "sequential" if jax.default_backend() == "cpu" else "associative"
    if method == "sequential":

        def step(y, ab):
            y = ab[0] * y + ab[1]
            return y, y

        _, ys = jax.lax.scan(step, y0, (A, B))
    elif method == "associative":

        def compose(first, second):
            a1, b1 = first
            a2, b2 = second
            return a2 * a1, a2 * b1 + b2

        As, Bs = jax.lax.associative_scan(compose, (A, B), axis=0)
        ys = As * y0[None, :] + Bs
    else:
        raise ValueError(f"method={method!r}; expected 'sequential' or 'associative'")
    return jnp.concatenate([y0[None, :], ys], axis=0)


def solve_forced(coef_fn, conc_fn, y0, nodes, index, conc=None):
    """Solve ``y_j' = a_j − b_j·y_j`` on ``nodes``; values at ``nodes[index]``.

    Parameters
    ----------
    coef_fn : callable
        ``coef_fn(c) -> (a, b)`` with ``c`` concentrations ``[...]`` and ``a``, ``b`` of shape
        ``[..., J]``.
    conc_fn : callable
        ``conc_fn(t) -> c``, vectorised over an array of times.
    y0 : array [J]
        States at ``nodes[0]``.
    nodes : array [N]
    index : int array [P]
    conc : tuple of arrays, optional
        Concentrations at the nodes ``[N]`` and step midpoints ``[N − 1]`` when already known
        (e.g. from :func:`linear_state_on_grid`); ``conc_fn`` is then not called.

    Returns
    -------
    values : array [P, J]
    ok : bool scalar
        Every decay rate ``b`` non-negative and every value finite (otherwise treat the solve as
        failed).
    """
    h = jnp.diff(nodes)
    mid = nodes[:-1] + 0.5 * h
    if conc is None:
        c = conc_fn(jnp.concatenate([nodes, mid]))
        n = nodes.shape[0]
        cn, cm = c[:n], c[n:]
    else:
        cn, cm = conc
    a_n, b_n = coef_fn(cn)
    a_m, b_m = coef_fn(cm)
    A, B = exponential_affine((a_n[:-1], a_m, a_n[1:]), (b_n[:-1], b_m, b_n[1:]), h)
    ys = solve_affine(jnp.asarray(y0, dtype=float), A, B)[index]
    ok = (jnp.all(b_n >= 0.0) & jnp.all(b_m >= 0.0)) & jnp.all(jnp.isfinite(ys))
    return ys, ok
