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

**ModalEngine** (linear PK: the generic library models and temsirolimus/sirolimus with its
S6K effect compartment; and the temsirolimus VEGF and PD-1 turnover): every concentration is
:math:`\sum_m c_m x_m(t)` with modal states :math:`\dot x_m = -\lambda_m x_m + u(t)` (poles
and coefficients from the model's own polyexponential responses, e.g.
:meth:`pkpd.models.temsirolimus.TemsirolimusModel.responses`). With the dose input :math:`u`
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

and are stepped by the exponential integrator of the same form with the forcing linear in time
over each step (for :math:`P` the decay rate :math:`g + k_{out,p}` is frozen at its step
average): second order in :math:`h`. On the default grid (:mod:`pkpd.simulate.plan`) VEGF and
PD-1 are within about 2e-5 relative (the PD-1 change at week 8 within 1e-4) of a reference
solution of the coupled ODE restarted at every dose start and infusion end (DOP853/LSODA, rtol
1e-11); ``model.predict``'s own diffrax solution differs from that reference by up to ~1e-3
(tests: ``tests/test_simulate.py``). The turnover equations are those of
:mod:`pkpd.models.temsirolimus` (its docstring); a change there must be mirrored here, and the
tests compare both engines.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pkpd.models.library import LinearPKModel
from pkpd.models.temsirolimus import MW_SIR, MW_TEM, TemsirolimusModel
from pkpd.pk import analytic
from pkpd.simulate.plan import subject_arrays

CONC_UNIT = "ng/mL"
TOTAL_UNIT = "nmol/L"


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


def _s6k_from_ce(params, ce):
    """S6K (% of baseline) from the effect-site driver (nM), as the temsirolimus model."""
    ce = jnp.maximum(ce, 0.0)
    h = params["s6k_hill"]
    ic50 = params["s6k_ic50"]
    pos = ce > 0
    safe = jnp.where(pos, ce, ic50)
    frac = jnp.where(pos, 1.0 / (1.0 + (ic50 / safe) ** h), 0.0)
    return 100.0 * (1.0 - params["s6k_imax"] * frac)


class ModalEngine:
    """Step-by-step exact linear PK, plus the temsirolimus turnover PD (module docstring)."""

    name = "modal"
    full_grid = True
    #: Steps unrolled per loop iteration (fewer loop overheads on CPU).
    unroll = 1

    def __init__(self, model, endpoints, *, boluses: bool = True):
        self.model = model
        self.endpoints = list(endpoints)
        #: False when no regimen has a bolus: the values before and after a dose then agree
        #: and are computed once.
        self.boluses = boluses

    @staticmethod
    def supports(model, parameters) -> bool:
        """True for the models this engine reproduces (no dose modifiers, no binding)."""
        if isinstance(model, TemsirolimusModel):
            return not model.binding
        if isinstance(model, LinearPKModel):
            return set(parameters) <= set(model.structural_parameters)
        return False

    def _modes(self, params):
        """Poles ``[M]`` and ``{output: coefficients [M]}`` for a dose into CMT 0/default."""
        m = self.model
        if isinstance(m, LinearPKModel):
            n = m.n_compartments
            v1 = params["v"] if n == 1 else params["v1"]
            q = [params[k] for k in ("q", "q2")[: n - 1]]
            vp = [params[k] for k in ("v2", "v3")[: n - 1]]
            disp = analytic.disposition(params["cl"], v1, q, vp)
            state = 1 if m.absorption else 0
            resp = analytic.state_response(disp, params.get("ka"), state=state)
            return resp.poles[0], {"conc": resp.coef[0] * 1000.0 / v1}
        tm = m.with_endpoints(self.endpoints)
        resp = tm.responses(params)
        top = next(k for k in ("effect", "sirolimus", "temsirolimus") if k in resp)
        lam = resp[top].poles[0]
        M = lam.shape[0]
        names = {
            "temsirolimus": "temsirolimus",
            "sirolimus": "sirolimus",
            "driver": "driver",
            "effect": "ce",
        }
        coefs = {}
        for k, out in names.items():
            if k in resp:
                c = resp[k].coef[0]
                coefs[out] = jnp.concatenate([c, jnp.zeros(M - c.shape[0])])
        return lam, coefs

    def run(self, params, amounts, g):
        """Series on the grid of one regimen ``g`` (dict of arrays) for one subject."""
        lam, coefs = self._modes(params)
        t = g["t"]
        h = t[1:] - t[:-1]
        u, bol = _dose_inputs(amounts, g, self.boluses)
        conc = [e for e in ("conc", "temsirolimus", "sirolimus") if e in coefs]
        C = jnp.stack([coefs[e] for e in conc])  # [K, M]
        pd = any(e in self.endpoints for e in ("vegf", "pd1_cd8"))
        has_ce = "ce" in coefs
        drv = coefs.get("driver")
        if pd:
            get = lambda k, d: params[k] if k in params else jnp.asarray(d)  # noqa: E731
            use_v, use_p = "vegf" in self.endpoints, "pd1_cd8" in self.endpoints
            vbase = get("vegf_base", 1.0) if use_v else jnp.asarray(1.0)
            kout_v = 1.0 / get("vegf_mrt", 1.0) if use_v else jnp.asarray(1.0)
            imax_v = get("vegf_imax", 0.0) if use_v else jnp.asarray(0.0)
            ic50_v = get("vegf_ic50", 1.0) if use_v else jnp.asarray(1.0)
            p0 = get("pd1_base", 50.0) if use_p else jnp.asarray(50.0)
            kout_p = get("pd1_kout", 1.0) if use_p else jnp.asarray(1.0)
            imax_p = get("pd1_imax", 0.0) if use_p else jnp.asarray(0.0)
            ic50_p = get("pd1_ic50", 1.0) if use_p else jnp.asarray(1.0)
            kin_v = vbase * kout_v
            kin_p = kout_p * p0 / (100.0 - p0)

            def forcing(c_raw):
                c = jnp.maximum(c_raw, 0.0)
                fv = kin_v * (1.0 - imax_v * c / (ic50_v + c))
                gp = kin_p * (1.0 - imax_p * c / (ic50_p + c))
                return fv, gp + kout_p, 100.0 * gp

        sum_drv = jnp.sum(drv) if pd else 0.0
        x0 = bol[0] * jnp.ones_like(lam)

        inv_lam2 = 1.0 / (lam * lam)
        if pd:
            inv_kv2 = 1.0 / (kout_v * kout_v)

        marks = g["win"].reshape(4)  # grid indices: cycle-1 start, end; steady-state start, end
        K = len(conc)

        def step(carry, inp):
            x, X, V, P, fv, ap, bp, cum_m, pre_m = carry
            j, hj, inv_h2, uj, bj = inp
            a = lam * hj
            e, p1, p2 = _decay(a, inv_lam2 * inv_h2)
            x_pre = x * e + uj * hj * p1
            X1 = X + x * hj * p1 + uj * hj * hj * p2
            x_post = x_pre + bj
            if pd:
                c_pre = drv @ x_pre
                fv1, ap1, bp1 = forcing(c_pre)
                av = kout_v * hj
                ev, q1, q2 = _decay(av, inv_kv2 * inv_h2)
                V1 = V * ev + hj * (fv * (q1 - q2) + fv1 * q2)
                aa = 0.5 * (ap + ap1) * hj
                ep, r1, r2 = _decay(aa, 1.0 / (aa * aa))
                P1 = P * ep + hj * (bp * (r1 - r2) + bp1 * r2)
                if self.boluses:
                    fvp, app, bpp = forcing(c_pre + bj * sum_drv)
                else:
                    fvp, app, bpp = fv1, ap1, bp1
            else:
                V1 = P1 = fvp = app = bpp = V
            # integrals (and values before a bolus) are needed at the four marks only
            hit = (marks == j)[:, None]
            cum_m = jnp.where(hit, (C @ X1)[None, :], cum_m)
            if self.boluses:
                pre_m = jnp.where(hit, (C @ x_pre)[None, :], pre_m)
            out = (C @ x_post, coefs["ce"] @ x_post if has_ce else V1, V1, P1)
            return (x_post, X1, V1, P1, fvp, app, bpp, cum_m, pre_m), out

        zero = jnp.zeros(())
        m0 = jnp.zeros((4, K))
        if pd:
            f0 = forcing(drv @ x0)
            init = (x0, jnp.zeros_like(lam), vbase, p0, *f0, m0, m0)
        else:
            init = (x0, jnp.zeros_like(lam), zero, zero, zero, zero, zero, m0, m0)
        inv_h2 = jnp.where(h > 0, 1.0 / jnp.where(h > 0, h * h, 1.0), 0.0)
        steps = jnp.arange(1, t.shape[0])
        carry, (ys, ce, V, P) = jax.lax.scan(
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
        if "s6k" in self.endpoints:
            ce_all = first(coefs["ce"] @ x0, ce)  # continuous: pre = post
            series["s6k"] = {"post": ce_all, "pre_m": ce_all[marks], "finalize": "s6k"}
        if "vegf" in self.endpoints:
            v = first(vbase, V)
            series["vegf"] = {"post": v, "pre_m": v[marks]}
        if "pd1_cd8" in self.endpoints:
            p = first(p0, P)
            series["pd1_cd8"] = {"post": p, "pre_m": p[marks]}
        ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(s["post"])) for s in series.values()]))
        return series, ok

    def finalize(self, params, kind, values):
        return _s6k_from_ce(params, values) if kind == "s6k" else values


class PredictEngine:
    """``model.predict`` at the grid points and midpoints; Simpson integrals (module docstring)."""

    name = "predict"
    full_grid = False

    def __init__(self, model, endpoints):
        self.model = model.with_endpoints(endpoints) if hasattr(model, "with_endpoints") else model
        self.endpoints = list(endpoints)

    def run(self, params, amounts, g):
        t = g["t"]
        G = t.shape[0]
        mid = 0.5 * (t[:-1] + t[1:])
        pts = jnp.concatenate([t, t, mid, t[-1:]])
        seq = jnp.concatenate(
            [jnp.ones(G, jnp.int32), -jnp.ones(G, jnp.int32), jnp.ones(G, jnp.int32)]
        )
        subj = subject_arrays(g["dose_time"], amounts, g["dose_dur"], g["dose_mask"], pts, seq)
        out = self.model.predict(params, subj)
        ok = jnp.asarray(out.get("ok", True))
        h = t[1:] - t[:-1]
        marks = g["win"].reshape(4)
        series = {}
        for e in self.endpoints:
            v = out[e]
            post, pre, mv = v[:G], v[G : 2 * G], v[2 * G : 3 * G - 1]
            s = {"post": post, "pre_m": pre[marks]}
            if e in ("conc", "temsirolimus", "sirolimus"):
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


def metric_catalogue(endpoints, horizon_h: float, week8_h: float) -> dict[str, dict]:
    """Names, units and descriptions of the per-subject metrics for these endpoints."""
    conc = [e for e in ("conc", "temsirolimus", "sirolimus") if e in endpoints]
    if "temsirolimus" in endpoints and "sirolimus" in endpoints:
        conc.append("total")
    out = {}
    where = {
        "c1": "cycle 1 (the first dosing interval)",
        "ss": "steady state (the last full dosing interval of the horizon)",
    }
    for e in conc:
        unit = TOTAL_UNIT if e == "total" else CONC_UNIT
        what = "temsirolimus + sirolimus, molar sum" if e == "total" else f"{e} concentration"
        for tag, txt in where.items():
            out[f"cmax_{e}_{tag}"] = dict(
                units=unit,
                long_name=f"Cmax of {what} in {txt}",
                endpoint=e,
                kind="cmax",
                window=tag,
            )
            out[f"ctrough_{e}_{tag}"] = dict(
                units=unit,
                long_name=f"Ctrough of {what} at the end of {txt}, before the next dose",
                endpoint=e,
                kind="ctrough",
                window=tag,
            )
            out[f"auc_tau_{e}_{tag}"] = dict(
                units=f"{unit.split('/')[0]}*h/{unit.split('/')[1]}",
                long_name=f"AUC of {what} over {txt}",
                endpoint=e,
                kind="auc",
                window=tag,
            )
    if "s6k" in endpoints:
        for tag, txt in where.items():
            out[f"s6k_inhibition_trough_{tag}"] = dict(
                units="%",
                long_name=f"S6K inhibition (100 - S6K phosphorylation in % of the "
                f"subject's baseline) at the trough ending {txt}",
                endpoint="s6k",
                kind="inhibition_trough",
                window=tag,
            )
    if "vegf" in endpoints:
        out["vegf_change_pct"] = dict(
            units="%",
            long_name=f"VEGF change from baseline at the horizon ({horizon_h:g} h), "
            "100*(VEGF(t)/VEGF(0) - 1)",
            endpoint="vegf",
            kind="change_pct",
            time_h=horizon_h,
        )
    if "pd1_cd8" in endpoints and week8_h <= horizon_h + 1e-9:
        out["pd1_change_week8"] = dict(
            units="percentage points",
            long_name="change of PD-1+ % of CD8+ T cells from "
            f"baseline at week 8 ({week8_h:g} h): PD1(t) - PD1(0), in percentage points",
            endpoint="pd1_cd8",
            kind="change_abs",
            time_h=week8_h,
        )
    return out


def metrics_and_profiles(engine, params, series, g, catalogue, ok, window: int):
    """Profiles at the output times and every metric of the catalogue for one subject/regimen.

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
    conc = [e for e in ("conc", "temsirolimus", "sirolimus") if e in series]
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
        if "temsirolimus" in per and "sirolimus" in per:
            ca, cb = 1000.0 / MW_TEM, 1000.0 / MW_SIR
            per["total"] = tuple(
                ca * x + cb * y for x, y in zip(per["temsirolimus"], per["sirolimus"], strict=True)
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
            metrics[name] = 100.0 * (fin(e, "post", pd_idx[1]) / base - 1.0)
        elif kind == "change_abs":
            metrics[name] = fin(e, "post", pd_idx[2]) - fin(e, "post", pd_idx[0])
        else:  # pragma: no cover - catalogue and code agree
            metrics[name] = jnp.asarray(jnp.nan)
    return profiles, metrics, ok
