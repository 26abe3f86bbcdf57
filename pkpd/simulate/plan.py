"""Regimens laid out for simulation: dose tables, metric intervals and time grids.

Definitions used by the metrics (h from the first dose):

* the **dosing interval** of dose *k* runs from its start to the next dose, or, for the last
  dose, to its start plus its interval ``II`` (a single dose: to the horizon), never past the
  horizon;
* **cycle 1** (``_c1``) is the interval of the first dose;
* **steady state** (``_ss``) is the last *full* dosing interval inside the simulated horizon.
  With the default horizon (the end of the longest regimen's last interval) this is the
  interval after the last dose: for ``"175 mg q1w x3 then 75 mg q1w x9"`` the 12th week. It
  is a steady state when the regimen has run for several half-lives (sirolimus: 55 h).

Grids. Concentrations are exact at any time (closed forms), so the grid only has to be fine
where a maximum is sought and where the PD forcing changes fast: every dose start and infusion
end is a grid point (the input is constant between grid points), and each interval gets points
at steps growing with time since the infusion ended (``STEPS``: 0.5 h for 6 h, 2 h to 24 h,
then 6 h in the two metric intervals; 1 h, 3 h and 12 h elsewhere), points inside infusions
dense near their start (``INFUSION_POINTS``), points just after a bolus or an oral dose
(``BOLUS_POINTS``), plus the output times. On the temsirolimus model
this keeps the step-by-step VEGF and PD-1 within about 2e-5 (profiles) and 1e-4 (the PD-1
change) of a 1e-11 reference solution.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pkpd.regimen import Regimen, RegimenError
from pkpd.simulate.errors import SimulationError

#: Time tolerance (h) when matching grid times.
TOL = 1e-9
#: Points inside an infusion (fractions of its duration, dense near its start, where the drug
#: concentration rises through the PD potencies), and step sizes (h) after its end: (until
#: 6 h, until 24 h, later).
INFUSION_POINTS = {
    "fine": (1e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.25, 0.5, 0.75),
    "coarse": (1e-3, 0.01, 0.05, 0.2, 0.5),
}
STEPS = {"fine": (0.5, 2.0, 6.0), "coarse": (1.0, 3.0, 12.0)}
#: Points just after a bolus or an oral dose (h): a concentration that jumps or rises within
#: minutes crosses a PD potency there, and a turnover's forcing bends (an oral dose's indirect
#: response was 1.6e-3 off a tight reference 0.5 h after the dose without them, within 2.2e-5
#: with them and the engine's mid-step rates; tests/models/test_blocks.py).
BOLUS_POINTS = {"fine": (0.01, 0.03, 0.1, 0.25), "coarse": (0.01, 0.05, 0.25)}
#: Follow-up of a single dose when no horizon is given (h).
SINGLE_DOSE_FOLLOW_UP_H = 168.0


def normalize_regimens(regimens) -> list[tuple[str, Regimen]]:
    """``(label, Regimen)`` pairs from a string, a Regimen, a sequence or a label mapping.

    Raises
    ------
    RegimenError
        For text that cannot be read (the message names the regimen and the place).
    SimulationError
        For an empty list or repeated labels.
    """
    if isinstance(regimens, (str, Regimen)):
        items = [(None, regimens)]
    elif isinstance(regimens, Mapping):
        items = [(str(k), v) for k, v in regimens.items()]
    elif isinstance(regimens, Sequence):
        items = [(None, r) for r in regimens]
    else:
        raise SimulationError(
            f"regimens must be a string, a pkpd.Regimen, a list of them or a mapping label -> "
            f"regimen; got {type(regimens).__name__}"
        )
    if not items:
        raise SimulationError("no regimens given; pass e.g. ['25 mg q1w x12 over 30 min']")
    out = []
    for i, (label, r) in enumerate(items):
        if isinstance(r, str):
            try:
                reg = Regimen(r)
            except RegimenError as e:
                raise RegimenError(f"regimen {i + 1}: {e}") from None
            text = r
        elif isinstance(r, Regimen):
            reg, text = r, r.text or str(r)
        else:
            raise SimulationError(
                f"regimen {i + 1} is a {type(r).__name__}; expected a string or a pkpd.Regimen"
            )
        out.append((label if label is not None else text, reg))
    labels = [lab for lab, _ in out]
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise SimulationError(f"regimen label(s) given twice: {dup}; give each regimen once")
    return out


def with_model_route(label: str, reg: Regimen, model) -> Regimen:
    """``reg`` as the model gives it: a regimen that states no route takes the route of the
    model's dosing compartment (:attr:`pkpd.models.Model.dose_route`: by mouth into a depot,
    else IV), so its text and description say what is simulated; a regimen that states a
    different route is refused (every simulated dose goes into the default compartment)."""
    route = model.dose_route
    routes = sorted({p.route for p in reg.phases})
    if not reg.route_stated:
        if route == "iv":
            return reg
        phases = [dataclasses.replace(p, route=route) for p in reg.phases]
        return Regimen(phases, reg.holds, text=reg.text, max_doses=reg.max_doses)
    if routes != [route]:
        comp = model.compartments.get(model.default_dose_compartment, "?")
        given = " and ".join("doses by mouth" if r == "oral" else "IV doses" for r in routes)
        takes = "by mouth (an absorption depot)" if route == "oral" else "IV"
        fix = (
            "write the regimen without a route (or 'oral'), and without an infusion time"
            if route == "oral"
            else "simulate it from a model with an absorption compartment (e.g. one_cmt_oral)"
        )
        raise SimulationError(
            f"regimen '{label}' gives {given}, but model {model.name!r} puts a regimen's "
            f"doses into compartment {model.default_dose_compartment} ({comp}), which is "
            f"{takes}; {fix}"
        )
    return reg


def default_horizon(regimens: Sequence[Regimen]) -> float:
    """End of the longest regimen's last dosing interval (h); see the module docstring."""
    ends = []
    for reg in regimens:
        if reg.open_ended:
            raise SimulationError(
                f"regimen '{reg}' is open-ended (no dose count); give horizon_h to say how long "
                "to simulate"
            )
        table = reg.dose_table()
        last = table.iloc[-1]
        ii = float(last["II"])
        ends.append(float(last["TIME"]) + (ii if ii > 0 else SINGLE_DOSE_FOLLOW_UP_H))
    return max(ends)


@dataclass(frozen=True)
class RegimenPlan:
    """One regimen's doses within the horizon and its metric intervals (times in h).

    ``unit`` per dose is ``mg``, ``mg/m2`` or ``mg/kg``; :meth:`amounts_mg` converts with each
    subject's BSA (m²) or WT (kg). ``text`` is the parsed regimen written out with every phase's
    route and infusion time (``str(regimen)``); ``description`` is its dose table in words
    (:meth:`pkpd.Regimen.describe`), e.g. ``"weeks 1-3: 175 mg IV over 30 min weekly (3 doses);
    ..."``.
    """

    label: str
    text: str
    description: str
    time: np.ndarray
    amount: np.ndarray
    unit: np.ndarray
    dur: np.ndarray
    next: np.ndarray
    c1: tuple[int, float, float]
    ss: tuple[int, float, float]

    @property
    def n_doses(self) -> int:
        return len(self.time)

    def needs(self) -> list[tuple[str, str]]:
        """Covariate columns the dose conversion needs: ``[(column, reason)]``."""
        out = []
        if np.any(self.unit == "mg/m2"):
            out.append(("BSA", f"regimen '{self.label}' (mg/m2 doses)"))
        if np.any(self.unit == "mg/kg"):
            out.append(("WT", f"regimen '{self.label}' (mg/kg doses)"))
        return out

    def amounts_mg(self, table: pd.DataFrame) -> np.ndarray:
        """Dose amounts in mg for every virtual subject, ``[S, n_doses]``."""
        S = len(table)
        out = np.tile(self.amount, (S, 1)).astype(float)
        for unit, col in (("mg/m2", "BSA"), ("mg/kg", "WT")):
            sel = self.unit == unit
            if np.any(sel):
                out[:, sel] *= table[col].to_numpy(dtype=float)[:, None]
        return out


def plan_regimen(label: str, reg: Regimen, horizon: float) -> RegimenPlan:
    """Doses of ``reg`` before ``horizon`` and its cycle-1 and steady-state intervals."""
    table = reg.dose_table(horizon)
    table = table[table["TIME"] < horizon - TOL].reset_index(drop=True)
    if len(table) == 0:
        raise SimulationError(f"regimen '{label}' gives no dose before the horizon {horizon:g} h")
    t = table["TIME"].to_numpy(dtype=float)
    ii = table["II"].to_numpy(dtype=float)
    raw_next = np.empty_like(t)
    raw_next[:-1] = t[1:]
    raw_next[-1] = t[-1] + ii[-1] if ii[-1] > 0 else horizon
    nxt = np.minimum(raw_next, horizon)
    full = np.flatnonzero((raw_next <= horizon + TOL) & (raw_next > t + TOL))
    k_ss = int(full[-1]) if len(full) else 0
    return RegimenPlan(
        label=label,
        text=str(reg),
        description=reg.describe(),
        time=t,
        amount=table["AMOUNT"].to_numpy(dtype=float),
        unit=table["UNIT"].to_numpy(dtype=str),
        dur=table["INFUSION_H"].to_numpy(dtype=float),
        next=nxt,
        c1=(0, float(t[0]), float(nxt[0])),
        ss=(k_ss, float(t[k_ss]), float(nxt[k_ss])),
    )


@dataclass(frozen=True)
class Grid:
    """Time grids of all regimens, padded to one length ``G`` (all arrays numpy).

    Attributes
    ----------
    t : [R, G]
        Sorted grid times (h); padding repeats the horizon.
    is_break : [R, G]
        A dose start or infusion end (no smooth peak refinement there).
    out_idx : [R, T]
        Grid index of each output time.
    win : [R, 2, 2]
        Grid indices ``(start, end)`` of the cycle-1 and steady-state intervals.
    pd_idx : [R, 1 + K]
        Grid indices of time 0 and of the ``K`` times the model's response metrics read
        (:func:`pkpd.simulate.engines.metric_times`, e.g. the horizon and week 8).
    infusing : [R, G, D]
        1 where dose ``d`` infuses over the whole step ``[t_j, t_{j+1}]``.
    bolus : [R, G, D]
        1 where bolus dose ``d`` is given at ``t_j``.
    dose_time, dose_dur : [R, D]
        Dose times and infusion durations, 0 for a bolus (padding: the horizon, 0, and a zero
        amount).
    dose_mask : [R, D]
    """

    t: np.ndarray
    is_break: np.ndarray
    out_idx: np.ndarray
    win: np.ndarray
    pd_idx: np.ndarray
    infusing: np.ndarray
    bolus: np.ndarray
    dose_time: np.ndarray
    dose_dur: np.ndarray
    dose_mask: np.ndarray

    @property
    def size(self) -> int:
        return self.t.shape[1]


def _pieces(a: float, e: float, b: float, kind: str) -> list[np.ndarray]:
    out = []
    if e > a + TOL:
        out.append(a + (e - a) * np.array([0.0, *INFUSION_POINTS[kind], 1.0]))
    else:
        out.append(np.array([a, *[a + x for x in BOLUS_POINTS[kind] if a + x < b - TOL]]))
    start = min(max(e, a), b)
    for until, step in zip((6.0, 24.0, math.inf), STEPS[kind], strict=True):
        end = min(max(e, a) + until, b)
        if end > start + TOL:
            out.append(np.linspace(start, end, max(1, math.ceil((end - start) / step - 1e-9)) + 1))
            start = end
    return out


def build_grid(
    plans: Sequence[RegimenPlan],
    horizon: float,
    out_times: np.ndarray,
    metric_times=(),
    *,
    full: bool,
) -> Grid:
    """Grids for every regimen (see the module docstring).

    ``full=False`` places points only in the metric intervals (plus output and PD times), for
    engines that evaluate any time directly; ``full=True`` covers the whole horizon, for the
    step-by-step engine. ``metric_times``: times (h, within the horizon) the metrics read.
    """
    read_at = [0.0, *(min(float(x), horizon) for x in metric_times)]
    R = len(plans)
    D = max(p.n_doses for p in plans)
    grids, breaks = [], []
    for p in plans:
        pts = [np.array([0.0, horizon, *read_at]), np.asarray(out_times, float)]
        wins = {p.c1[0], p.ss[0]}
        for k in range(p.n_doses):
            kind = "fine" if k in wins else "coarse"
            if not (full or k in wins):
                continue
            a, b = p.time[k], p.next[k]
            e = min(a + p.dur[k], b)
            pts += _pieces(a, e, b, kind)
        if full:
            if p.time[0] > TOL:
                pts.append(np.linspace(0.0, p.time[0], math.ceil(p.time[0] / 12.0) + 1))
            last = p.next[-1]
            if horizon > last + TOL:
                pts.append(np.linspace(last, horizon, math.ceil((horizon - last) / 12.0) + 1))
        brk = np.concatenate([p.time, p.time + p.dur])
        brk = brk[brk < horizon - TOL]
        pts.append(brk)
        g = np.unique(np.round(np.concatenate(pts), 9))
        g = g[(g >= -TOL) & (g <= horizon + TOL)]
        grids.append(g)
        breaks.append(brk)
    G = max(len(g) for g in grids)
    t = np.stack([np.concatenate([g, np.full(G - len(g), g[-1])]) for g in grids])

    def index(r, times):
        times = np.round(np.asarray(times, dtype=float), 9)
        idx = np.searchsorted(grids[r], times)
        idx = np.minimum(idx, len(grids[r]) - 1)
        if not np.allclose(grids[r][idx], times, atol=1e-7):  # pragma: no cover - defensive
            raise AssertionError("grid construction lost a required time")
        return idx

    is_break = np.zeros((R, G), dtype=bool)
    out_idx = np.zeros((R, len(out_times)), dtype=np.int32)
    win = np.zeros((R, 2, 2), dtype=np.int32)
    pd_idx = np.zeros((R, len(read_at)), dtype=np.int32)
    infusing = np.zeros((R, G, D))
    bolus = np.zeros((R, G, D))
    dose_time = np.full((R, D), horizon)
    dose_dur = np.zeros((R, D))
    dose_mask = np.zeros((R, D), dtype=bool)
    for r, p in enumerate(plans):
        is_break[r, index(r, breaks[r])] = True
        out_idx[r] = index(r, out_times)
        win[r, 0] = index(r, p.c1[1:])
        win[r, 1] = index(r, p.ss[1:])
        pd_idx[r] = index(r, read_at)
        n = p.n_doses
        dose_time[r, :n] = p.time
        dose_dur[r, :n] = p.dur
        dose_mask[r, :n] = True
        tj, tj1 = t[r, :-1], t[r, 1:]
        for d in range(n):
            if p.dur[d] > 0:
                infusing[r, :-1, d] = (
                    (p.time[d] <= tj + TOL) & (tj1 <= p.time[d] + p.dur[d] + TOL) & (tj1 > tj)
                )
            else:
                bolus[r, index(r, [p.time[d]])[0], d] = 1.0
    return Grid(
        t=t,
        is_break=is_break,
        out_idx=out_idx,
        win=win,
        pd_idx=pd_idx,
        infusing=infusing,
        bolus=bolus,
        dose_time=dose_time,
        dose_dur=dose_dur,
        dose_mask=dose_mask,
    )


def subject_arrays(dose_time, dose_amt, dose_dur, dose_mask, point_time, point_seq, occ_start=None):
    """A one-subject :class:`pkpd.data.arrays.SubjectData` for a regimen (works under jit).

    Doses go into the model's default compartment (``CMT 0``), as
    :meth:`pkpd.Regimen.to_events` gives them; a point whose ``point_seq`` is -1 is before a
    dose at the same time (a trough), 1 after it. ``occ_start`` ``[O]`` (h, increasing): the
    occasions' starts; a dose at a start belongs to the new occasion, a trough there to the
    one before.
    """
    import jax.numpy as jnp

    from pkpd.data.arrays import SubjectData

    D = dose_time.shape[0]
    P = point_time.shape[0]
    zi = lambda n: jnp.zeros(n, dtype=jnp.int32)  # noqa: E731
    return SubjectData(
        dose_time=dose_time,
        dose_amt=jnp.where(dose_mask, dose_amt, 0.0),
        dose_rate=jnp.zeros(D),
        dose_dur=dose_dur,
        dose_ii=jnp.zeros(D),
        dose_cmt=zi(D),
        dose_ss=zi(D),
        dose_evid=jnp.where(dose_mask, 1, 0).astype(jnp.int32),
        dose_seq=zi(D),
        dose_segment=zi(D),
        dose_row=jnp.arange(D, dtype=jnp.int32),
        dose_mask=dose_mask,
        dose_cov=jnp.zeros((D, 0)),
        point_time=point_time,
        point_dv=jnp.full(P, jnp.nan),
        point_lloq=jnp.full(P, jnp.nan),
        point_endpoint=zi(P),
        point_cmt=zi(P),
        point_seq=point_seq,
        point_segment=zi(P),
        point_row=jnp.arange(P, dtype=jnp.int32),
        point_blq=jnp.zeros(P, dtype=bool),
        point_mask=jnp.zeros(P, dtype=bool),
        point_valid=jnp.ones(P, dtype=bool),
        point_cov=jnp.zeros((P, 0)),
        cov=jnp.zeros(0),
        study=jnp.zeros((), dtype=jnp.int32),
        **_occasion_fields(occ_start, dose_time, point_time, point_seq),
    )


def _occasion_fields(occ_start, dose_time, point_time, point_seq) -> dict:
    """The occasion fields of :func:`subject_arrays` (none without ``occ_start``)."""
    import jax.numpy as jnp

    if occ_start is None:
        return {}
    n = occ_start.shape[0]
    after = jnp.searchsorted(occ_start, point_time, side="right")
    before = jnp.searchsorted(occ_start, point_time, side="left")
    return dict(
        dose_occ=jnp.clip(jnp.searchsorted(occ_start, dose_time, side="right") - 1, 0, n - 1),
        point_occ=jnp.clip(jnp.where(point_seq < 0, before, after) - 1, 0, n - 1),
        occ_start=occ_start,
        occ_seq=jnp.zeros(n, dtype=jnp.int32),
        occ_segment=jnp.zeros(n, dtype=jnp.int32),
        occ_valid=jnp.ones(n, dtype=bool),
    )
