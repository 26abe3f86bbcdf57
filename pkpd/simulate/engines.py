r"""Two ways to compute one virtual subject's endpoints on a regimen's time grid.

Both return, for every endpoint, its values at each grid time (``post``: after a dose given
then) and, at the four *marks* (the grid indices where the cycle-1 and steady-state intervals
start and end), its values before a dose given then (``pre_m``) and, for concentrations, the
integral over time from 0 (``cum_m``, unit·h); the metrics are taken from these
(:func:`metrics_and_profiles`).

**PredictEngine** (any model): calls ``model.predict`` at every grid point (after and before
doses) and at every midpoint between grid points; integrals by Simpson's rule on each grid
step (every dose start and infusion end is a grid point, so each step is smooth; relative
error about ``(λh)⁴/2880`` for a pole λ and step h, e.g. 4e-8 for λ = 0.5/h, h = 0.5 h).
Used for models the modal engine does not cover (saturable binding, dose modifiers such as
lag or bioavailability, models from outside pkpd); with the temsirolimus PD it integrates
VEGF and PD-1 by diffrax inside ``model.predict`` and costs about 20-40x more.

**ModalEngine** (models with a modal form, :class:`pkpd.models.base.ModalForm`: linear PK,
effect compartments, pointwise responses and turnover states; e.g. the generic library models
and temsirolimus/sirolimus with S6K, VEGF and PD-1): every concentration is
:math:`\sum_m c_m x_m(t)` with modal states :math:`\dot x_m = -\lambda_m x_m + u(t)` (poles
and coefficients from the model's own polyexponential responses, e.g.
:meth:`pkpd.models.base.Model.modal_form`). With the dose input :math:`u`
constant on each grid step of length :math:`h` (boluses added at grid points), one step is
exact:

.. math::
    x_m \leftarrow x_m e^{-a} + u\,h\,\varphi_1(a), \qquad
    \int x_m\,dt \mathrel{+}= x_m h\,\varphi_1(a) + u\,h^2\varphi_2(a), \qquad a = \lambda_m h,

:math:`\varphi_1(a) = (1-e^{-a})/a`, :math:`\varphi_2(a) = (a-1+e^{-a})/a^2`. So
concentrations and AUCs are exact (to rounding), at a cost of one step per grid point instead
of one term per dose and point. The turnover states are linear in themselves given the drug
driver :math:`c(t)`:

.. math::
    \dot R = k_{in}(1 - I_v(c)) - k_{out} R, \qquad
    \dot P = g(c)(100 - P) - k_{out,p} P,\quad g = k_{in,p}(1 - I_p(c)),

and are stepped by the exponential integrator of :func:`pkpd.pd.forced.exponential_affine`
(the modal states give the driver exactly at each step's start, middle and end: the
production is the quadratic through them, the decay rate, :math:`g + k_{out,p}` for
:math:`P`, frozen at its Simpson mean). On the default grid (:mod:`pkpd.simulate.plan`) VEGF and
PD-1 are within about 2e-5 relative (the PD-1 change at week 8 within 1e-4) of a reference
solution of the coupled ODE restarted at every dose start and infusion end (DOP853/LSODA, rtol
1e-11); ``model.predict``'s own diffrax solution differs from that reference by up to ~1e-3
(tests: ``tests/simulate/test_simulate.py``). The poles, output coefficients, pointwise endpoints and
turnover equations all come from the model (:meth:`pkpd.models.base.Model.modal_form`); this
module knows no model and no endpoint by name.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pkpd.models.base import METRIC_WINDOWS
from pkpd.pd.forced import exponential_affine
from pkpd.simulate.plan import subject_arrays


def _decay(a, inv_a2):
    """``exp(-a)``, ``φ1(a)``, ``φ2(a)`` with one exponential; ``inv_a2 = 1/a²``.

    Below ``a = 0.05`` ``φ2`` is its Taylor series to ``a⁵`` (error < 4e-13 relative), above it
    the closed form (cancellation error < 1e-13); ``φ1 = 1 − a·φ2``.
    """
    e = jnp.exp(-a)
    series = 0.5 - a / 6.0 * (1.0 - a / 4.0 * (1.0 - a / 5.0 * (1.0 - a / 6.0 * (1.0 - a / 7.0))))
    phi2 = jnp.where(a < 0.05, series, (a - 1.0 + e) * inv_a2)
    return e, 1.0 - a * phi2, phi2


def _dose_inputs(amounts, g, boluses=True):
    """Infusion rate on each step ``[G]`` (mg/h) and bolus at each grid point ``[G]`` (mg)."""
    dur = g["dose_dur"]
    amt = jnp.where(g["dose_mask"], amounts, 0.0)
    rate = jnp.where(dur > 0, amt / jnp.where(dur > 0, dur, 1.0), 0.0)
    bol = g["bolus"] @ amt if boluses else jnp.zeros(g["t"].shape)
    return g["infusing"] @ rate, bol


class ModalEngine:
    """Step-by-step exact linear PK, plus the model's pointwise and turnover endpoints (module
    docstring), from the model's :meth:`~pkpd.models.base.Model.modal_form`."""

    name = "modal"
    full_grid = True
    #: Steps unrolled per loop iteration (fewer loop overheads on CPU).
    unroll = 1

    def __init__(self, model, endpoints, *, boluses: bool = True):
        self.model = model
        self.endpoints = list(endpoints)
        self.variant = model.with_endpoints(self.endpoints)
        #: False when no regimen has a bolus: the values before and after a dose then agree
        #: and are computed once.
        self.boluses = boluses

    @staticmethod
    def supports(model, parameters) -> bool:
        """True for models whose modal form reproduces ``predict`` with these parameters."""
        return bool(model.modal_parameters_supported(parameters))

    def run(self, params, amounts, g):
        """Series on the grid of one regimen ``g`` (dict of arrays) for one subject."""
        form = self.variant.modal_form(params)
        lam, coefs = form.poles, form.outputs
        t = g["t"]
        h = t[1:] - t[:-1]
        u, bol = _dose_inputs(amounts, g, self.boluses)
        # the concentration outputs: integrals and values before doses are kept for these
        conc = [e for e in coefs if e in self.model.concentration_endpoints]
        C = jnp.stack([coefs[e] for e in conc]) if conc else jnp.zeros((0, lam.shape[0]))  # [K, M]
        direct = {e: form.direct[e] for e in self.endpoints if e in form.direct}
        turn = [(e, form.turnover[e]) for e in self.endpoints if e in form.turnover]
        D = jnp.stack([coefs[o] for o, _ in direct.values()]) if direct else None
        drivers = [coefs[tv.driver] for _, tv in turn]

        def drive(x):
            """Every turnover state's driver at modal state x."""
            return [d @ x for d in drivers]

        def rates(c):
            """(production, loss) of every turnover state at driver values c (floored at 0)."""
            out = [tv.rates(jnp.maximum(ck, 0.0)) for ck, (_, tv) in zip(c, turn, strict=True)]
            return jnp.stack([a for a, _ in out]), jnp.stack([b for _, b in out])

        x0 = bol[0] * jnp.ones_like(lam)
        inv_lam2 = 1.0 / (lam * lam)
        marks = g["win"].reshape(4)  # grid indices: cycle-1 start, end; steady-state start, end
        K = len(conc)
        n_turn = len(turn)
        bolus_shift = [jnp.sum(d) for d in drivers]  # driver jump per mg of bolus

        def step(carry, inp):
            x, X, y, prod, loss, cum_m, pre_m = carry
            j, hj, inv_h2, uj, bj = inp
            a = lam * hj
            e, p1, p2 = _decay(a, inv_lam2 * inv_h2)
            x_pre = x * e + uj * hj * p1
            X1 = X + x * hj * p1 + uj * hj * hj * p2
            x_post = x_pre + bj
            if n_turn:
                # the rates at the step's middle too: a quadratic through the three values
                e_h, p1_h, _ = _decay(0.5 * a, 4.0 * inv_lam2 * inv_h2)
                prod_m, loss_m = rates(drive(x * e_h + uj * 0.5 * hj * p1_h))
                c_pre = drive(x_pre)
                prod1, loss1 = rates(c_pre)
                A, B = exponential_affine((prod, prod_m, prod1), (loss, loss_m, loss1), hj)
                y1 = A * y + B
                if self.boluses:
                    # rates just after a bolus given at the step's end (the driver jumps)
                    c_post = [c + bj * sh for c, sh in zip(c_pre, bolus_shift, strict=True)]
                    prod1, loss1 = rates(c_post)
            else:
                y1, prod1, loss1 = y, prod, loss
            # integrals (and values before a bolus) are needed at the four marks only
            hit = (marks == j)[:, None]
            cum_m = jnp.where(hit, (C @ X1)[None, :], cum_m)
            if self.boluses:
                pre_m = jnp.where(hit, (C @ x_pre)[None, :], pre_m)
            out = (C @ x_post, D @ x_post if direct else y1, y1)
            return (x_post, X1, y1, prod1, loss1, cum_m, pre_m), out

        m0 = jnp.zeros((4, K))
        if n_turn:
            y0 = jnp.stack([jnp.asarray(tv.baseline, dtype=float) for _, tv in turn])
            p0, l0 = rates(drive(x0))
        else:
            y0 = p0 = l0 = jnp.zeros(0)
        init = (x0, jnp.zeros_like(lam), y0, p0, l0, m0, m0)
        inv_h2 = jnp.where(h > 0, 1.0 / jnp.where(h > 0, h * h, 1.0), 0.0)
        steps = jnp.arange(1, t.shape[0])
        carry, (ys, dv, yt) = jax.lax.scan(
            step, init, (steps, h, inv_h2, u[:-1], bol[1:]), unroll=self.unroll
        )
        cum_m, pre_m = carry[-2], carry[-1]
        first = lambda v0, v: jnp.concatenate([jnp.asarray(v0)[None], v])  # noqa: E731
        ys = first(C @ x0, ys)  # [G, K]
        if not self.boluses:
            pre_m = ys[marks]
        series = {}
        for k, e in enumerate(conc):
            series[e] = {"post": ys[:, k], "pre_m": pre_m[:, k], "cum_m": cum_m[:, k]}
        if direct:
            dv = first(D @ x0, dv)  # [G, n_direct]; continuous: pre = post
            for k, (e, (_, f)) in enumerate(direct.items()):
                series[e] = {"post": dv[:, k], "pre_m": dv[marks, k], "finalize": f}
        if n_turn:
            yt = first(y0, yt)  # [G, n_turn]
            for k, (e, _) in enumerate(turn):
                series[e] = {"post": yt[:, k], "pre_m": yt[marks, k]}
        ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(s["post"])) for s in series.values()]))
        return series, ok

    def finalize(self, params, kind, values):
        """An endpoint computed pointwise from a modal output (``kind``: its function)."""
        return values if kind is None else kind(values)


class PredictEngine:
    """``model.predict`` at the grid points and midpoints; Simpson integrals (module docstring)."""

    name = "predict"
    full_grid = False

    def __init__(self, model, endpoints):
        self.model = model.with_endpoints(endpoints)
        self.endpoints = list(endpoints)

    def run(self, params, amounts, g):
        t = g["t"]
        G = t.shape[0]
        mid = 0.5 * (t[:-1] + t[1:])
        pts = jnp.concatenate([t, t, mid, t[-1:]])
        seq = jnp.concatenate(
            [jnp.ones(G, jnp.int32), -jnp.ones(G, jnp.int32), jnp.ones(G, jnp.int32)]
        )
        subj = subject_arrays(
            g["dose_time"], amounts, g["dose_dur"], g["dose_mask"], pts, seq, g.get("occ_start")
        )
        out = self.model.predict(params, subj)
        ok = jnp.asarray(out.get("ok", True))
        h = t[1:] - t[:-1]
        marks = g["win"].reshape(4)
        series = {}
        for e in self.endpoints:
            v = out[e]
            post, pre, mv = v[:G], v[G : 2 * G], v[2 * G : 3 * G - 1]
            s = {"post": post, "pre_m": pre[marks]}
            if e in self.model.concentration_endpoints:
                piece = h / 6.0 * (post[:-1] + 4.0 * mv + pre[1:])
                s["cum_m"] = jnp.concatenate([jnp.zeros(1), jnp.cumsum(piece)])[marks]
            series[e] = s
            ok = ok & jnp.all(jnp.isfinite(post)) & jnp.all(jnp.isfinite(pre))
        return series, ok

    def finalize(self, params, kind, values):
        return values


def _peak(t, y, is_break, idx, a, b):
    """The largest value of ``y`` at grid indices ``idx`` in ``[a, b)``, refined.

    Refinement: the vertex of the parabola through the maximum and its neighbours, where the
    curve is smooth there (not at a dose start or infusion end, and not at the interval's ends).
    ``t``, ``y``, ``is_break`` and ``idx`` are one window's slices.
    """
    W = t.shape[0]
    vals = jnp.where((idx >= a) & (idx < b), y, -jnp.inf)
    m = jnp.argmax(vals)
    y1 = vals[m]
    lo, hi = jnp.maximum(m - 1, 0), jnp.minimum(m + 1, W - 1)
    t0, t1, t2 = t[lo], t[m], t[hi]
    y0, y2 = y[lo], y[hi]
    d01 = (y1 - y0) / jnp.where(t1 > t0, t1 - t0, 1.0)
    d12 = (y2 - y1) / jnp.where(t2 > t1, t2 - t1, 1.0)
    f2 = (d12 - d01) / jnp.where(t2 > t0, t2 - t0, 1.0)
    smooth = (idx[m] > a) & (idx[m] + 1 < b) & ~is_break[m] & (f2 < 0) & (t1 > t0) & (t2 > t1)
    ts = 0.5 * (t0 + t1) - d01 / jnp.where(smooth, 2.0 * f2, -1.0)
    inside = (ts > t0) & (ts < t2)
    yv = y0 + d01 * (ts - t0) + f2 * (ts - t0) * (ts - t1)
    return jnp.where(smooth & inside, jnp.maximum(y1, yv), y1)


def metric_times(model, endpoints, horizon_h: float) -> list[float]:
    """The times (h) the model's response metrics read, besides 0, sorted: each grid has a
    point there (``pd_idx`` column ``1 + k`` for the ``k``-th)."""
    times = {
        min(float(m.time_h), horizon_h)
        for m in model.response_metrics(endpoints, horizon_h).values()
        if m.time_h is not None
    }
    return sorted(times)


def metric_catalogue(model, endpoints, horizon_h: float) -> dict[str, dict]:
    """Names, units and descriptions of the per-subject metrics for these endpoints.

    Every concentration endpoint of the model (and every combination of them the model
    defines, :meth:`~pkpd.models.base.Model.combined_concentrations`) gets Cmax, Ctrough and
    AUC over cycle 1 and steady state; the model adds its own response metrics
    (:meth:`~pkpd.models.base.Model.response_metrics`).
    """
    units = model.endpoint_units
    conc = {e: units[e] for e in model.concentration_endpoints if e in endpoints}
    what = {e: f"{e} concentration" for e in conc}
    for name, c in model.combined_concentrations(endpoints).items():
        conc[name] = c["units"]
        what[name] = c["long_name"]
    out = {}
    where = METRIC_WINDOWS
    for e, unit in conc.items():
        amount, _, volume = unit.partition("/")
        for tag, txt in where.items():
            out[f"cmax_{e}_{tag}"] = dict(
                units=unit,
                long_name=f"Cmax of {what[e]} in {txt}",
                endpoint=e,
                kind="cmax",
                window=tag,
            )
            out[f"ctrough_{e}_{tag}"] = dict(
                units=unit,
                long_name=f"Ctrough of {what[e]} at the end of {txt}, before the next dose",
                endpoint=e,
                kind="ctrough",
                window=tag,
            )
            out[f"auc_tau_{e}_{tag}"] = dict(
                units=f"{amount}*h/{volume}" if volume else f"{unit}*h",
                long_name=f"AUC of {what[e]} over {txt}",
                endpoint=e,
                kind="auc",
                window=tag,
            )
    times = metric_times(model, endpoints, horizon_h)
    for name, m in model.response_metrics(endpoints, horizon_h).items():
        entry = dict(units=m.units, long_name=m.long_name, endpoint=m.endpoint, kind=m.kind)
        if m.window is not None:
            entry["window"] = m.window
        if m.time_h is not None:
            entry["time_h"] = m.time_h
            entry["time_index"] = 1 + times.index(min(float(m.time_h), horizon_h))
        out[name] = entry
    return out


def metrics_and_profiles(engine, params, series, g, catalogue, ok, window: int, combined=None):
    """Profiles at the output times and every metric of the catalogue for one subject/regimen.

    ``combined``: the model's combined concentrations (``{name: {"terms": {endpoint:
    factor}}}``, :meth:`~pkpd.models.base.Model.combined_concentrations`).

    ``window``: a static length covering every metric interval's grid points (the interval's
    values are sliced out before the maximum is sought, so the work does not grow with ``G``).
    """
    t = g["t"]
    G = t.shape[0]
    win = g["win"]
    pd_idx = g["pd_idx"]

    def fin(name, key, idx):
        s = series[name]
        return engine.finalize(params, s.get("finalize"), s[key][idx])

    profiles = {e: fin(e, "post", g["out_idx"]) for e in series}
    conc = sorted({spec["endpoint"] for spec in catalogue.values() if spec["kind"] == "cmax"})
    conc = [e for e in conc if e in series]
    W = min(window, G)
    windows = {}
    for w in (0, 1):
        a, b = win[w, 0], win[w, 1]
        start = jnp.clip(a, 0, G - W)
        sl = lambda x, s0=start: jax.lax.dynamic_slice(x, (s0,), (W,))  # noqa: E731
        per = {}
        for e in conc:
            s = series[e]
            per[e] = (
                sl(s["post"]),
                s["pre_m"][2 * w + 1],
                s["cum_m"][2 * w + 1] - s["cum_m"][2 * w],
            )
        for name, c in (combined or {}).items():
            terms = list(c["terms"].items())
            if all(e in per for e, _ in terms):
                per[name] = tuple(
                    sum(f * v for (_, f), v in zip(terms, vals, strict=True))
                    for vals in zip(*(per[e] for e, _ in terms), strict=True)
                )
        windows[w] = (sl(t), sl(g["is_break"]), start + jnp.arange(W), a, b, per)
    metrics = {}
    peaks = {}
    for name, spec in catalogue.items():
        kind, e = spec["kind"], spec["endpoint"]
        w = 0 if spec.get("window") == "c1" else 1
        if kind in ("cmax", "ctrough", "auc"):
            tw, bw, idx, a, b, per = windows[w]
            yw, trough, auc = per[e]
            if kind == "cmax":
                if (e, w) not in peaks:
                    peaks[(e, w)] = jnp.maximum(_peak(tw, yw, bw, idx, a, b), trough)
                metrics[name] = peaks[(e, w)]
            else:
                metrics[name] = trough if kind == "ctrough" else auc
        elif kind == "inhibition_trough":
            metrics[name] = 100.0 - fin(e, "pre_m", 2 * w + 1)
        elif kind == "change_pct":
            base = fin(e, "post", pd_idx[0])
            metrics[name] = 100.0 * (fin(e, "post", pd_idx[spec["time_index"]]) / base - 1.0)
        elif kind == "change_abs":
            at = fin(e, "post", pd_idx[spec["time_index"]])
            metrics[name] = at - fin(e, "post", pd_idx[0])
        else:  # pragma: no cover - catalogue and code agree
            metrics[name] = jnp.asarray(jnp.nan)
    return profiles, metrics, ok
