"""Dosing regimens as values, and a parser for the strings people write.

>>> from pkpd import Regimen
>>> r = Regimen("175 mg q1w x3 then 75 mg q1w x9 over 30 min")
>>> r.n_doses, r.to_events()["TIME"].tolist()[:4], r.to_events()["DUR"].unique().tolist()
(12, [0.0, 168.0, 336.0, 504.0], [0.5])
>>> print(r.describe().replace("; ", ";\\n"))
weeks 1-3: 175 mg IV over 30 min weekly (3 doses);
weeks 4-12: 75 mg IV over 30 min weekly (9 doses);
12 doses in all
>>> str(r)
'175 mg q1w x3 over 30 min then 75 mg q1w x9 over 30 min'

Grammar (case-insensitive; phases joined by ``then``; modifiers after commas)::

    regimen  := phase ("then" phase)* ("," modifier)*
    phase    := AMOUNT [ROUTE] [FREQ [COUNT] [FREQ [COUNT]]] [INFUSION] [ROUTE]
    AMOUNT   := number [UNIT]
    UNIT     := "mg" | "mg/m2" | "mg/m²" | "mg/kg" | "g" | "ug" | "mcg"
    FREQ     := "q" [n] ("h" | "d" | "w") | "qd" | "qod" | "bid" | "tid" | "qid" | "daily"
              | "weekly" | "every" n ("hours" | "days" | "weeks") | "once"
    COUNT    := "x" n [doses|cycles] | "for" n ("doses" | "days" | "weeks" | "cycles")
    INFUSION := ["over"] number ("min" | "h")
    ROUTE    := "iv" | "intravenous" | "infusion" | "bolus" | "oral" | "po"
    modifier := "hold" ("week" | "weeks" | "dose" | "doses") n ["-" n] ("," n ["-" n])*
              | INFUSION

A second FREQ after a count repeats the block as a cycle: ``"15 mg/m2 qd x5 q2w"`` is five daily
doses every two weeks. A phase without a count is open-ended (only the last phase), and its
events need ``horizon_h``. ``hold week 5`` skips the doses due in week 5 (``[4*168, 5*168)`` h);
``hold dose 5`` skips the 5th scheduled dose; held doses are missed, not postponed.

How a dose is given, written once, applies to every phase that does not say otherwise:

* **Infusion time.** A phase states one with ``over 30 min`` (or ``30 min``, ``1 h``), or states
  a bolus with ``bolus``. A trailing modifier (``..., over 30 min``) is the infusion time of
  every IV phase that states none. Without it, a phase that states none takes the infusion time
  the other phases state, when they all state the same one, and is a bolus when none does. So
  ``"175 mg q1w x3 then 75 mg q1w x9 over 30 min"`` is twelve 30-min infusions, as a clinician
  reading it would give them; ``"175 mg q1w x3 bolus then 75 mg q1w x9 over 30 min"`` keeps the
  loading doses as boluses. Phases that state different infusion times keep their own; if
  phases state different ones *and* another phase states none, the string has two readings and
  :class:`RegimenError` shows both (write the time in every phase, or add the trailing modifier).
* **Route.** ``oral``/``po`` or ``iv`` (an infusion time or ``bolus`` also says IV) in one phase
  applies the same way; IV when no phase states a route. Oral doses have no infusion time.
* **Unit.** A phase may give its amount as a bare number (``"175 mg q1w x3 then 75 q1w x9"``)
  when the phases that state a unit all state the same one.

Why: a modifier written at the end of a multi-phase string is read by people as applying to the
whole regimen, and silently giving the other phases a default (an IV bolus) changed the cycle-1
exposure of the loading doses by tens of percent without any sign in the output. Where the text
cannot tell, the parser refuses rather than picks.

Checks. Holds must refer to doses of the regimen (a week or dose number past its last dose, or
a hold that holds no dose, is a :class:`RegimenError` naming the hold and the regimen's extent),
and at least one dose must be left. A regimen has at most :data:`MAX_DOSES` doses (counts, holds
and horizons are checked before anything is allocated); pass ``max_doses=`` to
:class:`Regimen` (or to :meth:`Regimen.dose_table` / :meth:`Regimen.to_events`) to allow more.
Infusions may not be longer than their dosing interval.

:meth:`Regimen.describe` writes the dose table in words; ``str(regimen)`` writes a string that
parses back to the same regimen, with every phase's route and infusion time stated.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from pkpd.data.dataset import EVENT_FIELDS

HOURS = {"h": 1.0, "d": 24.0, "w": 168.0}
_UNIT_TO_MG = {"mg": 1.0, "g": 1000.0, "ug": 1e-3, "mcg": 1e-3, "µg": 1e-3}
#: The most doses one regimen may have (over its horizon, when open-ended); counts, holds and
#: horizons beyond it raise :class:`RegimenError` before anything is allocated. Pass
#: ``max_doses=`` to :class:`Regimen`, :meth:`Regimen.dose_table` or :meth:`Regimen.to_events`
#: to allow more.
MAX_DOSES = 100_000
_WEEK = 168.0


class RegimenError(ValueError):
    """A regimen string or value that cannot be understood; the message says where and why."""


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_finite_number(v) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return False
    try:
        return math.isfinite(v)
    except (TypeError, OverflowError):
        return False


def _check_limit(max_doses) -> int:
    if not _is_int(max_doses) or max_doses < 1:
        raise RegimenError(f"max_doses={max_doses!r}; expected a whole number >= 1")
    return int(max_doses)


def _too_many(n: int, limit: int, what: str) -> RegimenError:
    return RegimenError(
        f"{what} has {n} doses, more than the maximum of {limit} doses per regimen "
        f"(pkpd.regimen.MAX_DOSES = {MAX_DOSES}); pass max_doses=... to allow more"
    )


@dataclass(frozen=True)
class Phase:
    """One block of identical doses.

    Parameters
    ----------
    amount : float
        Dose in ``unit``.
    unit : {"mg", "mg/m2", "mg/kg"}
        Dose unit; mg/m² is converted with ``bsa_m2``, mg/kg with ``weight_kg`` when events are
        built.
    interval_h : float
        Time between doses (h); 0 for a single dose.
    count : int or None
        Number of doses per cycle; ``None`` = open-ended.
    infusion_h : float
        Infusion duration (h); 0 = bolus. Not longer than ``interval_h`` (when > 0); 0 for oral.
    cycle_h : float or None
        Repeat the block every ``cycle_h`` hours (``qd x5 q2w``).
    cycles : int or None
        Number of cycles when ``cycle_h`` is set; ``None`` = open-ended.
    route : {"iv", "oral"}

    Raises
    ------
    RegimenError
        For a non-finite, non-positive or inconsistent value (the message names it).
    """

    amount: float
    unit: str = "mg"
    interval_h: float = 0.0
    count: int | None = 1
    infusion_h: float = 0.0
    cycle_h: float | None = None
    cycles: int | None = 1
    route: str = "iv"

    def __post_init__(self):
        if not (_is_finite_number(self.amount) and self.amount > 0):
            raise RegimenError(f"dose amount must be a positive number, got {self.amount!r}")
        if self.unit not in ("mg", "mg/m2", "mg/kg"):
            raise RegimenError(f"dose unit {self.unit!r}; expected 'mg', 'mg/m2' or 'mg/kg'")
        for name in ("interval_h", "infusion_h"):
            v = getattr(self, name)
            if not _is_finite_number(v) or v < 0:
                raise RegimenError(f"{name} must be a finite number >= 0 (h), got {v!r}")
        if self.count is not None and not _is_int(self.count):
            raise RegimenError(f"dose count must be a whole number, got {self.count!r}")
        if self.count is not None and self.count < 1:
            raise RegimenError(f"dose count must be >= 1, got {self.count}")
        if (self.count is None or self.count > 1) and not self.interval_h > 0:
            raise RegimenError("repeated doses need an interval (e.g. q1w)")
        if self.route not in ("iv", "oral"):
            raise RegimenError(f"route {self.route!r}; expected 'iv' or 'oral'")
        if self.route == "oral" and self.infusion_h > 0:
            raise RegimenError(
                f"an oral dose has no infusion time (got {_dur_text(self.infusion_h)}); "
                "drop it or give the dose IV"
            )
        if self.infusion_h > 0 and self.interval_h > 0 and self.infusion_h > self.interval_h:
            raise RegimenError(
                f"infusion time {_dur_text(self.infusion_h)} is longer than the dosing interval "
                f"({self.interval_h:g} h): the infusions would overlap"
            )
        if self.cycle_h is not None:
            if not _is_finite_number(self.cycle_h) or self.cycle_h <= 0:
                raise RegimenError(f"cycle_h must be a finite number > 0 (h), got {self.cycle_h!r}")
            if self.count is None:
                raise RegimenError("a cycle (e.g. 'qd x5 q2w') needs a dose count inside it")
            span = (self.count - 1) * self.interval_h
            if self.cycle_h <= span:
                raise RegimenError(
                    f"cycle length {self.cycle_h:g} h is not longer than the {self.count} doses "
                    f"inside it ({span:g} h)"
                )
            if self.cycles is not None and (not _is_int(self.cycles) or self.cycles < 1):
                raise RegimenError(
                    f"number of cycles must be a whole number >= 1, got {self.cycles!r}"
                )

    @property
    def open_ended(self) -> bool:
        return self.count is None or (self.cycle_h is not None and self.cycles is None)

    def span_h(self) -> float:
        """Time from this phase's first dose to the next phase's first dose."""
        if self.open_ended:
            return math.inf
        if self.cycle_h is not None:
            return self.cycle_h * self.cycles
        return self.count * self.interval_h if self.interval_h > 0 else 0.0

    def n_doses(self, horizon_h: float = math.inf) -> int:
        """Number of doses before ``horizon_h`` (h from the phase start), without building them.

        Raises
        ------
        RegimenError
            For an open-ended phase and an infinite horizon.
        """
        if horizon_h <= 0:
            return 0
        finite = math.isfinite(horizon_h)
        inner = self.count if self.count is not None else _n_before(horizon_h, self.interval_h)
        if self.cycle_h is None:
            if finite and self.interval_h > 0:
                inner = min(inner, math.ceil(horizon_h / self.interval_h))
            return inner
        nc = self.cycles if self.cycles is not None else _n_before(horizon_h, self.cycle_h)
        if finite:
            nc = min(nc, math.ceil(horizon_h / self.cycle_h))
        return nc * inner

    def dose_times(self, horizon_h: float) -> np.ndarray:
        """Dose times relative to the phase start, up to (excluding) ``horizon_h``.

        The caller bounds the number of doses first (:meth:`n_doses`).
        """
        if horizon_h <= 0:
            return np.zeros(0)
        if self.cycle_h is None:
            n = self.n_doses(horizon_h)
            t = np.arange(n) * self.interval_h
        else:
            nc = self.n_doses(horizon_h) // self.count
            inner = np.arange(self.count) * self.interval_h
            t = (np.arange(nc)[:, None] * self.cycle_h + inner[None, :]).ravel()
        return t[t < horizon_h] if math.isfinite(horizon_h) else t

    def to_text(self, *, explicit: bool = False) -> str:
        """The phase in the regimen grammar; ``explicit`` also writes ``bolus`` for IV boluses."""
        amt = f"{self.amount:g} {self.unit}"
        if self.interval_h == 0 and self.count == 1:
            s = f"{amt} once"
        else:
            s = f"{amt} {_freq_text(self.interval_h)}"
            if self.count is not None:
                s += f" x{self.count}"
        if self.cycle_h is not None:
            s += f" {_freq_text(self.cycle_h)}"
            if self.cycles is not None and self.cycles != 1:
                s += f" x{self.cycles}"
        if self.route == "oral":
            s += " oral"
        if self.infusion_h > 0:
            s += f" over {_dur_text(self.infusion_h)}"
        elif explicit and self.route == "iv":
            s += " bolus"
        return s

    def __str__(self) -> str:
        return self.to_text()

    def describe(self) -> str:
        """The phase in words: amount, route and infusion, frequency and number of doses."""
        amt = f"{self.amount:g} {self.unit}"
        if self.route == "oral":
            how = "oral"
        elif self.infusion_h > 0:
            how = f"IV over {_dur_text(self.infusion_h)}"
        else:
            how = "IV bolus"
        if self.cycle_h is None:
            if self.count == 1:
                return f"{amt} {how}, single dose"
            n = "open-ended" if self.count is None else f"{self.count} doses"
            return f"{amt} {how} {_every(self.interval_h)} ({n})"
        if self.count == 1:
            s = f"{amt} {how} {_every(self.cycle_h)}"
        else:
            s = f"{amt} {how} {_every(self.interval_h)} x{self.count}, repeated "
            s += _every(self.cycle_h)
        if self.cycles is None:
            return s + " (open-ended)"
        plural = "s" if self.cycles > 1 else ""
        return s + f" for {self.cycles} cycle{plural} ({self.count * self.cycles} doses)"


def _n_before(horizon_h: float, step: float) -> int:
    if not math.isfinite(horizon_h):
        raise RegimenError(
            "the regimen is open-ended (no dose count); give horizon_h to say how long to dose"
        )
    return max(0, math.ceil(horizon_h / step))


def _freq_text(h: float) -> str:
    for unit, size in (("w", 168.0), ("d", 24.0)):
        if h % size == 0:
            return f"q{int(h // size)}{unit}" if h != 24 else "qd"
    return f"q{h:g}h"


def _every(h: float) -> str:
    for size, one, many in ((168.0, "weekly", "weeks"), (24.0, "daily", "days")):
        if h % size == 0:
            k = int(h // size)
            return one if k == 1 else f"every {k} {many}"
    return f"every {h:g} h"


def _dur_text(h: float) -> str:
    mins = h * 60
    return f"{mins:g} min" if mins < 60 or mins % 60 else f"{h:g} h"


def _ranges_text(nums) -> str:
    """``[1, 2, 3, 5]`` -> ``"1-3, 5"`` (at most 12 pieces shown)."""
    pieces = []
    nums = sorted(set(int(n) for n in nums))
    i = 0
    while i < len(nums):
        j = i
        while j + 1 < len(nums) and nums[j + 1] == nums[j] + 1:
            j += 1
        pieces.append(f"{nums[i]}" if i == j else f"{nums[i]}-{nums[j]}")
        i = j + 1
    if len(pieces) > 12:
        return ", ".join(pieces[:12]) + f", ... ({len(pieces) - 12} more)"
    return ", ".join(pieces)


@dataclass(frozen=True)
class Hold:
    """Doses skipped: by week number (1-based, week k = ``[(k-1)*168, k*168)`` h) or dose number.

    Parameters
    ----------
    kind : {"week", "dose"}
    ranges : tuple of (int, int)
        Inclusive ranges of week or dose numbers (``hold weeks 5-6, 9`` is ``((5, 6), (9, 9))``);
        a plain int ``n`` stands for ``(n, n)``. Kept as ranges, so a large range costs nothing.
    """

    kind: str
    ranges: tuple[tuple[int, int], ...]

    def __post_init__(self):
        if self.kind not in ("week", "dose"):
            raise RegimenError(f"hold kind {self.kind!r}; expected 'week' or 'dose'")
        out = []
        for r in self.ranges:
            a, b = (r, r) if _is_int(r) else tuple(r)
            if not (_is_int(a) and _is_int(b)) or a < 1 or b < a:
                raise RegimenError(
                    f"hold {self.kind} range {r!r}: expected whole numbers 1 <= first <= last"
                )
            out.append((int(a), int(b)))
        if not out:
            raise RegimenError(f"hold {self.kind}: no number given")
        object.__setattr__(self, "ranges", tuple(out))

    def __str__(self) -> str:
        plural = len(self.ranges) > 1 or self.ranges[0][0] != self.ranges[0][1]
        nums = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.ranges)
        return f"{self.kind}{'s' if plural else ''} {nums}"

    @property
    def last(self) -> int:
        return max(b for _, b in self.ranges)

    def mask(self, time: np.ndarray, dose_number: np.ndarray) -> np.ndarray:
        """True for the doses (times in h, 1-based scheduled numbers) this hold skips."""
        held = np.zeros(len(time), dtype=bool)
        for a, b in self.ranges:
            if self.kind == "week":
                held |= (time >= (a - 1) * _WEEK) & (time < b * _WEEK)
            else:
                held |= (dose_number >= a) & (dose_number <= b)
        return held


@dataclass(frozen=True, init=False)
class Regimen:
    """A dosing regimen: phases given one after the other, with optional holds.

    ``Regimen("25 mg q1w x12 over 30 min")`` parses a string (see the module docstring for the
    grammar and how an infusion time, route or unit written once binds);
    ``Regimen(phases=[Phase(...), ...])`` builds one from values.

    Parameters
    ----------
    phases : str or sequence of Phase
        The regimen string, or the phases in order.
    holds : sequence of Hold
        Doses skipped (with ``phases`` given as values).
    text : str, optional
        The text the regimen was read from (kept for display; not compared).
    max_doses : int
        Most doses the regimen may have (default :data:`MAX_DOSES`).

    Attributes
    ----------
    route_stated : bool
        Whether the text says how the drug is given (``iv``, ``oral``, an infusion time or
        ``bolus``); phases given as values always state theirs. A regimen that does not is
        read as IV here, and :func:`pkpd.simulate` gives its doses the route of the model's
        dosing compartment (by mouth for a model whose doses go into a depot).

    Raises
    ------
    RegimenError
        For text that cannot be read, more than ``max_doses`` doses, holds that refer to no dose
        of the regimen, or no dose left after the holds.
    """

    phases: tuple[Phase, ...]
    holds: tuple[Hold, ...] = field(default=())
    text: str | None = field(default=None, compare=False)
    max_doses: int = field(default=MAX_DOSES, compare=False, repr=False)
    route_stated: bool = field(default=True, compare=False, repr=False)

    def __init__(self, phases=None, holds=(), *, text=None, max_doses=MAX_DOSES):
        max_doses = _check_limit(max_doses)
        route_stated = True
        if isinstance(phases, str):
            text = phases
            phases, holds, route_stated = _parse(phases, max_doses)
        if phases is None or len(phases) == 0:
            raise RegimenError("a regimen needs at least one phase")
        phases = tuple(phases)
        for p in phases:
            if not isinstance(p, Phase):
                raise RegimenError(f"phases must be pkpd.regimen.Phase values, got {p!r}")
        for p in phases[:-1]:
            if p.open_ended:
                raise RegimenError(
                    f"phase '{p}' has no dose count but is followed by another phase; "
                    "only the last phase may be open-ended"
                )
        holds = tuple(holds)
        for h in holds:
            if not isinstance(h, Hold):
                raise RegimenError(f"holds must be pkpd.regimen.Hold values, got {h!r}")
        object.__setattr__(self, "phases", phases)
        object.__setattr__(self, "holds", holds)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "max_doses", max_doses)
        object.__setattr__(self, "route_stated", route_stated)
        self._phase_starts()  # checks that every phase has a start
        self._check_size()
        self._check_holds()

    def _phase_starts(self) -> list[float]:
        """Start (h) of each phase: the previous one's start plus its span.

        A single dose followed by another phase spans one interval (or cycle) of the next
        phase: ``"175 mg once then 75 mg q1w x3"`` doses at 0, 168, 336 and 504 h, as a loading
        dose followed by the weekly phase is meant. Two single doses in a row have no interval
        to go by and are refused.
        """
        starts, start = [], 0.0
        for k, p in enumerate(self.phases):
            starts.append(start)
            span = p.span_h()
            if span == 0.0 and k + 1 < len(self.phases):
                nxt = self.phases[k + 1]
                span = nxt.cycle_h or nxt.interval_h
                if not span:
                    raise RegimenError(
                        f"{self._label()}: phase {k + 1} ('{p}') and phase {k + 2} ('{nxt}') are "
                        "single doses, so nothing says when the second is given; write the "
                        "interval, e.g. '25 mg q1w x2', or one phase with a frequency"
                    )
            start += span
        return starts

    # -- checks ---------------------------------------------------------------------------------
    def _label(self) -> str:
        return f"regimen {self.text!r}" if self.text is not None else f"regimen '{self}'"

    def _check_size(self) -> None:
        n = 0
        for p in self.phases:
            if not p.open_ended:
                n += p.n_doses()
            elif p.count is not None:
                n += p.count  # doses per cycle of an open-ended cycle
        if n > self.max_doses:
            raise _too_many(n, self.max_doses, self._label())

    def _check_holds(self) -> None:
        if not self.holds or self.open_ended:
            return
        time, number, _ = self._schedule(math.inf)
        n = len(time)
        week = (time // _WEEK).astype(np.int64) + 1
        last_week = int(week[-1])
        extent = f"its {n} dose{'s' if n > 1 else ''} fall in weeks 1-{last_week}"
        if last_week == 1:
            extent = f"its {n} dose{'s' if n > 1 else ''} fall in week 1"
        held = np.zeros(n, dtype=bool)
        for h in self.holds:
            end = n if h.kind == "dose" else last_week
            if h.last > end:
                past = f"dose {h.last}" if h.kind == "dose" else f"week {h.last}"
                raise RegimenError(
                    f"{self._label()}: 'hold {h}' refers to {past}, past the end of the regimen "
                    f"({extent}, dose numbers 1-{n})"
                )
            mask = h.mask(time, number)
            if not mask.any():
                raise RegimenError(
                    f"{self._label()}: 'hold {h}' holds no dose; the doses fall in weeks "
                    f"{_ranges_text(week)}"
                )
            held |= mask
        if held.all():
            holds = ", ".join(f"'hold {h}'" for h in self.holds)
            raise RegimenError(
                f"{self._label()} has no dose left: "
                + (f"all of its {n} doses are" if n > 1 else "its only dose is")
                + f" held ({holds})"
            )

    def _schedule(
        self, horizon: float, limit: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Scheduled dose times (h), 1-based dose numbers and phase indices, before holds.

        The number of doses is counted (and checked against ``limit``) before anything is built.
        """
        limit = self.max_doses if limit is None else limit
        starts = self._phase_starts()
        counts = [p.n_doses(horizon - start) for p, start in zip(self.phases, starts, strict=True)]
        total = sum(counts)
        if total > limit:
            what = self._label()
            if math.isfinite(horizon):
                what += f" up to horizon_h={horizon:g} h"
            raise _too_many(total, limit, what)
        times, phase = [], []
        for k, (p, start) in enumerate(zip(self.phases, starts, strict=True)):
            t = start + p.dose_times(horizon - start)
            times.append(t)
            phase.append(np.full(len(t), k, dtype=np.int64))
        time = np.concatenate(times)
        return time, np.arange(1, len(time) + 1), np.concatenate(phase)

    # -- views ----------------------------------------------------------------------------------
    def __str__(self) -> str:
        explicit = len(self.phases) > 1
        s = " then ".join(p.to_text(explicit=explicit) for p in self.phases)
        for h in self.holds:
            s += f", hold {h}"
        return s

    def describe(self) -> str:
        """The dose table in words.

        One entry per phase (the weeks, days or hours it covers; amount and unit; IV bolus, IV
        infusion time or oral; frequency; number of doses, cycles), then the holds with the
        doses they skip, then the number of doses in all (with more than one phase or a hold),
        joined by ``"; "``. Weeks and days are numbered from 1 (week 1 = the first 168 h), as in
        ``hold week N``.

        Returns
        -------
        str
            E.g. ``"weeks 1-3: 175 mg IV over 30 min weekly (3 doses); weeks 4-12: 75 mg IV
            over 30 min weekly (9 doses); held: week 5 (1 dose); 11 doses in all"``.
        """
        name, size = self._period_unit()
        parts = [
            f"{_period(name, size, start, p)}: {p.describe()}"
            for p, start in zip(self.phases, self._phase_starts(), strict=True)
        ]
        if not self.open_ended:
            time, number, _ = self._schedule(math.inf)
            kept = np.ones(len(time), dtype=bool)
        for h in self.holds:
            s = f"held: {h}"
            if not self.open_ended:
                k = int(h.mask(time, number).sum())
                s += f" ({k} dose{'s' if k != 1 else ''})"
                kept &= ~h.mask(time, number)
            parts.append(s)
        if not self.open_ended and (len(self.phases) > 1 or self.holds):
            k = int(kept.sum())
            parts.append(f"{k} dose{'s' if k != 1 else ''} in all")
        return "; ".join(parts)

    def _period_unit(self) -> tuple[str, float]:
        vals = []
        for p, start in zip(self.phases, self._phase_starts(), strict=True):
            vals.append(start)
            span = p.span_h()
            vals.append(span if math.isfinite(span) else (p.cycle_h or p.interval_h))
        for name, size in (("week", _WEEK), ("day", 24.0)):
            if all(abs(v / size - round(v / size)) < 1e-9 for v in vals):
                return name, size
        return "hour", 1.0

    @property
    def open_ended(self) -> bool:
        return self.phases[-1].open_ended

    @property
    def n_doses(self) -> int:
        if self.open_ended:
            raise RegimenError("the regimen is open-ended; count doses over a horizon_h instead")
        return len(self.dose_table())

    def dose_table(
        self, horizon_h: float = math.inf, *, max_doses: int | None = None
    ) -> pd.DataFrame:
        """Dose times (h), amounts in the regimen's units, infusion durations, phase index.

        Parameters
        ----------
        horizon_h : float
            Only doses before this time (h); required (finite) for open-ended regimens.
        max_doses : int, optional
            Most doses allowed before the horizon (default: the regimen's ``max_doses``); checked
            before the table is built.

        Returns
        -------
        pandas.DataFrame
            Columns ``TIME``, ``AMOUNT``, ``UNIT``, ``INFUSION_H``, ``II``, ``PHASE``, ``ROUTE``,
            ``DOSE_NUMBER`` (1-based number in the schedule before holds); held doses left out.
        """
        limit = self.max_doses if max_doses is None else _check_limit(max_doses)
        try:
            horizon = float(horizon_h)
        except (TypeError, ValueError):
            raise RegimenError(f"horizon_h={horizon_h!r}; expected a number of hours") from None
        if math.isnan(horizon):
            raise RegimenError("horizon_h is NaN; expected a number of hours")
        time, number, phase = self._schedule(horizon, limit)

        def col(attr):
            return np.array([getattr(self.phases[k], attr) for k in range(len(self.phases))])[phase]

        table = pd.DataFrame(
            {
                "TIME": time.astype(float),
                "AMOUNT": col("amount").astype(float),
                "UNIT": col("unit").astype(object),
                "INFUSION_H": col("infusion_h").astype(float),
                "II": col("interval_h").astype(float),
                "PHASE": phase,
                "ROUTE": col("route").astype(object),
                "DOSE_NUMBER": number,
            }
        )
        keep = np.ones(len(table), dtype=bool)
        for h in self.holds:
            keep &= ~h.mask(time, number)
        return table[keep].reset_index(drop=True)

    def to_events(
        self,
        *,
        bsa_m2: float | None = None,
        weight_kg: float | None = None,
        horizon_h: float | None = None,
        cmt: int = 0,
        subject: str = "1",
        max_doses: int | None = None,
    ) -> pd.DataFrame:
        """Dose events with the columns of :meth:`pkpd.Dataset.events` (mg, h).

        Parameters
        ----------
        bsa_m2 : float, optional
            Body surface area; needed for mg/m² doses (and fills ``AMT_MG_M2`` for mg doses).
        weight_kg : float, optional
            Body weight; needed for mg/kg doses.
        horizon_h : float, optional
            Dose only before this time; required for open-ended regimens.
        cmt : int
            Dose compartment (0 = the model's default).
        subject : str
            Value of the ``ID`` column.
        max_doses : int, optional
            Most doses allowed (default: the regimen's ``max_doses``, :data:`MAX_DOSES`).

        Raises
        ------
        RegimenError
            For a missing BSA or weight, an open-ended regimen without a horizon, more than
            ``max_doses`` doses, or no dose before the horizon.
        """
        horizon = math.inf if horizon_h is None else horizon_h
        if self.open_ended and horizon_h is None:
            raise RegimenError(
                f"{self._label()} is open-ended; give horizon_h (h) to say how long to dose"
            )
        table = self.dose_table(horizon, max_doses=max_doses)
        if len(table) == 0:
            raise RegimenError(f"{self._label()} gives no dose before horizon_h={horizon_h!r} h")
        a = table["AMOUNT"].to_numpy(dtype=float)
        u = table["UNIT"].to_numpy()
        amt = a.copy()
        amt_m2 = a / bsa_m2 if bsa_m2 else np.full(len(a), np.nan)
        m2, kg = u == "mg/m2", u == "mg/kg"
        if m2.any():
            if bsa_m2 is None or not bsa_m2 > 0:
                raise RegimenError(
                    f"{self._label()} doses in mg/m2; give bsa_m2 (m2, > 0) to convert to mg"
                )
            amt[m2] = a[m2] * bsa_m2
            amt_m2[m2] = a[m2]
        if kg.any():
            if weight_kg is None or not weight_kg > 0:
                raise RegimenError(
                    f"{self._label()} doses in mg/kg; give weight_kg (kg, > 0) to convert"
                )
            amt[kg] = a[kg] * weight_kg
            amt_m2[kg] = amt[kg] / bsa_m2 if bsa_m2 else np.nan
        n = len(table)
        out = pd.DataFrame(
            {
                "ID": [subject] * n,
                "TIME": table["TIME"].to_numpy(dtype=float),
                "EVID": np.ones(n, dtype=np.int64),
                "AMT": amt,
                "AMT_MG_M2": amt_m2,
                "RATE": np.zeros(n),
                "DUR": table["INFUSION_H"].to_numpy(dtype=float),
                "CMT": np.full(n, cmt, dtype=np.int64),
                "II": table["II"].to_numpy(dtype=float),
                "SS": np.zeros(n, dtype=np.int64),
                "ADDL_INDEX": np.zeros(n, dtype=np.int64),
                "ROW": np.arange(n, dtype=np.int64),
                "SEQ": np.arange(n, dtype=np.int64),
                "SEGMENT": np.zeros(n, dtype=np.int64),
            }
        )
        return out[list(EVENT_FIELDS)]

    def to_records(self, **kwargs) -> pd.DataFrame:
        """NONMEM-style dose records (one per dose) that :func:`pkpd.read_dataset` reads back."""
        ev = self.to_events(**kwargs)
        return pd.DataFrame(
            {
                "ID": ev["ID"],
                "TIME": ev["TIME"],
                "EVID": ev["EVID"],
                "AMT": ev["AMT"],
                "DUR": ev["DUR"],
                "CMT": ev["CMT"],
                "II": ev["II"],
                "MDV": 1,
            }
        )

    def scaled(self, factor: float) -> Regimen:
        """The same schedule with every dose multiplied by ``factor`` (a dose reduction)."""
        if not (_is_finite_number(factor) and factor > 0):
            raise RegimenError(f"dose factor must be a positive number, got {factor!r}")
        return Regimen(
            phases=[replace(p, amount=p.amount * factor) for p in self.phases],
            holds=self.holds,
            max_doses=self.max_doses,
        )


def _period(name: str, size: float, start: float, p: Phase) -> str:
    span = p.span_h()
    if name == "hour":
        if not math.isfinite(span):
            return f"from {start:g} h"
        last = start + float(p.dose_times(math.inf)[-1])
        return f"at {start:g} h" if last == start else f"{start:g}-{last:g} h"
    a = int(round(start / size)) + 1
    if not math.isfinite(span):
        return f"from {name} {a}"
    b = max(a, int(round((start + span) / size)))
    return f"{name} {a}" if a == b else f"{name}s {a}-{b}"


# ---------------------------------------------------------------------------------------------
# Parser

_NUM = r"(\d+(?:\.\d*)?|\.\d+)"
_TOKENS = [
    (
        "AMOUNT",
        re.compile(_NUM + r"\s*(mg/m\^?2|mg/m²|mg/m\*\*2|mg/kg|mg|mcg|µg|ug|g)(?![a-z0-9])"),
    ),
    ("EVERY", re.compile(r"every\s+" + _NUM + r"?\s*(hours?|hrs?|h|days?|d|weeks?|wks?|w)\b")),
    ("FREQ", re.compile(r"q" + _NUM + r"?\s*(h|hr|d|w|wk)(?![a-z])")),
    ("NAMED", re.compile(r"(qod|qd|bid|tid|qid|daily|weekly|once|single dose|single)\b")),
    ("COUNT", re.compile(r"[x×]\s*(\d+)\s*(doses?|cycles?)?\b")),
    ("FOR", re.compile(r"for\s+(\d+)\s*(doses?|days?|weeks?|cycles?)\b")),
    ("INFUSION", re.compile(r"(?:over\s+)?" + _NUM + r"\s*(minutes?|mins?|min|hours?|hrs?|h)\b")),
    ("ROUTE", re.compile(r"(iv|i\.v\.|intravenous|infusion|bolus|po|oral)(?![a-z0-9])")),
]
_BARE = re.compile(_NUM + r"(?![a-z0-9.µ/%])")
_INFUSION_RX = dict(_TOKENS)["INFUSION"]
_NAMED_H = {
    "qd": 24.0,
    "daily": 24.0,
    "qod": 48.0,
    "bid": 12.0,
    "tid": 8.0,
    "qid": 6.0,
    "weekly": 168.0,
}
_HOLD = re.compile(r"hold\s+(weeks?|doses?)\s+([\d\s,\-–and]+)$")


def _unit_hours(u: str) -> float:
    u = u.lower()
    if u.startswith("w"):
        return 168.0
    if u.startswith("d"):
        return 24.0
    if u.startswith("m"):
        return 1 / 60
    return 1.0


def _err(text: str, pos: int, what: str) -> RegimenError:
    snippet = text[pos:].split()[0] if text[pos:].split() else text[pos:]
    return RegimenError(
        f"cannot read regimen {text!r}: {what} at character {pos + 1} ({snippet!r}). "
        "Expected e.g. '25 mg q1w x12 over 30 min', '175 mg q1w x3 then 75 mg q1w x9', "
        "'15 mg/m2 qd x5 q2w' or '25 mg q1w x12 over 1 h, hold week 5'"
    )


def _match_token(s: str, pos: int) -> tuple[str | None, re.Match | None]:
    for name, rx in _TOKENS:
        m = rx.match(s, pos)
        if m:
            return name, m
    return None, None


@dataclass
class _RawPhase:
    """A phase as written, before what other phases state is bound to it."""

    start: int  # position of the phase in the text
    source: str  # the phase as written (original case)
    amount: float
    unit: str | None  # as written, normalised ("mg", "g", "mg/m2", ...); None = bare number
    amount_pos: int
    interval: float
    count: int | None
    cycle_h: float | None
    cycles: int | None
    infusion: float | None  # None = not stated, 0 = "bolus"
    route: str | None  # None = not stated


def _parse_phase(text: str, s: str, offset: int, max_doses: int) -> _RawPhase:
    """Parse one phase (``s`` lower-case, at ``offset`` in ``text``)."""
    pos = 0
    amount = unit = None
    amount_pos = offset
    freqs: list[float] = []
    counts: list[tuple[int, str | None]] = []
    infusion_h: float | None = None
    infusion_pos = None
    route: str | None = None
    once = False
    while pos < len(s):
        if s[pos].isspace():
            pos += 1
            continue
        name, m = _match_token(s, pos)
        if m is None and amount is None:
            m = _BARE.match(s, pos)
            name = "BARE" if m else None
        if m is None:
            if s[pos].isdigit() or s[pos] == ".":
                raise _err(
                    text, offset + pos, "a number without a unit (write e.g. '25 mg' or '15 mg/m2')"
                )
            raise _err(text, offset + pos, "unknown word")
        if name in ("AMOUNT", "BARE"):
            if amount is not None:
                raise _err(text, offset + pos, "a second dose amount in one phase (use 'then')")
            amount = float(m.group(1))
            amount_pos = offset + pos
            if name == "AMOUNT":
                unit = m.group(2).replace("²", "2").replace("^", "").replace("**", "")
        elif amount is None:
            raise _err(text, offset + pos, "the dose amount (e.g. '25 mg') must come first")
        elif name == "FREQ":
            n = float(m.group(1)) if m.group(1) else 1.0
            freqs.append(n * HOURS[m.group(2)[0]])
        elif name == "EVERY":
            n = float(m.group(1)) if m.group(1) else 1.0
            freqs.append(n * _unit_hours(m.group(2)))
        elif name == "NAMED":
            w = m.group(1)
            if w.startswith("once") or w.startswith("single"):
                once = True
            else:
                freqs.append(_NAMED_H[w])
        elif name in ("COUNT", "FOR"):
            k, u = int(m.group(1)), m.group(2)
            what = f"a count of {k}"
            if name == "COUNT" or u.startswith("dose") or u.startswith("cycle"):
                kind = "cycles" if u and u.startswith("cycle") else "doses"
            else:
                if not freqs:
                    raise _err(text, offset + pos, f"'for {k} {u}' needs a frequency before it")
                try:
                    ratio = k * _unit_hours(u) / freqs[-1]
                except OverflowError:
                    ratio = math.inf
                if not math.isfinite(ratio):
                    raise _err(text, offset + pos, f"'for {k} {u}' is too long")
                if abs(ratio - round(ratio)) > 1e-9:
                    raise _err(text, offset + pos, f"{k} {u} is not a whole number of intervals")
                what = f"'for {k} {u}' ({ratio:.6g} doses)"
                k, kind = int(round(ratio)), "for"
            if k > max_doses:
                raise _err(
                    text,
                    offset + pos,
                    f"{what}, more than the maximum of {max_doses} doses per regimen "
                    f"(pkpd.regimen.MAX_DOSES = {MAX_DOSES}; pass max_doses=... to allow more)",
                )
            counts.append((k, kind))
        elif name == "INFUSION":
            if infusion_h is not None:
                raise _err(text, offset + pos, "a second infusion time (or 'bolus') in one phase")
            infusion_h = float(m.group(1)) * _unit_hours(m.group(2))
            infusion_pos = offset + pos
            if not (infusion_h > 0 and math.isfinite(infusion_h)):
                raise _err(text, offset + pos, "an infusion duration must be a positive number")
        elif name == "ROUTE":
            r = m.group(1)
            new = "oral" if r in ("po", "oral") else "iv"
            if route is not None and route != new:
                raise _err(text, offset + pos, f"two routes in one phase ({route}, {new})")
            route = new
            if r == "bolus":
                if infusion_h is not None:
                    raise _err(
                        text, offset + pos, "a second infusion time (or 'bolus') in one phase"
                    )
                infusion_h, infusion_pos = 0.0, offset + pos
        pos = m.end()
    if amount is None:
        raise _err(text, offset, "no dose amount (e.g. '25 mg')")
    if not (amount > 0 and math.isfinite(amount)):
        raise _err(text, amount_pos, "the dose amount must be a positive number")
    if once and (freqs or counts):
        raise _err(text, offset, "'once' cannot have a frequency or a count")
    if len(freqs) > 2:
        raise _err(text, offset, "more than two frequencies in one phase")
    if len(counts) > len(freqs) and not (len(counts) == 1 and not freqs and counts[0][0] == 1):
        raise _err(text, offset, "a dose count ('x12') needs a frequency ('q1w') before it")
    if infusion_h is not None and infusion_h > 0:
        if route == "oral":
            raise _err(text, infusion_pos, "an oral dose has no infusion time")
        route = "iv"
    interval = freqs[0] if freqs else 0.0
    count: int | None = counts[0][0] if counts else (1 if not freqs else None)
    cycle_h = freqs[1] if len(freqs) == 2 else None
    cycles: int | None = 1
    if cycle_h is not None:
        cycles = counts[1][0] if len(counts) > 1 else None
    if count is not None and cycles is not None and count * cycles > max_doses:
        raise _err(
            text,
            offset,
            f"{count} doses x {cycles} cycles = {count * cycles} doses, more than the maximum of "
            f"{max_doses} doses per regimen (pkpd.regimen.MAX_DOSES = {MAX_DOSES}; pass "
            "max_doses=... to allow more)",
        )
    return _RawPhase(
        start=offset,
        source=text[offset : offset + len(s)],
        amount=amount,
        unit=unit,
        amount_pos=amount_pos,
        interval=interval,
        count=count,
        cycle_h=cycle_h,
        cycles=cycles,
        infusion=infusion_h,
        route=route,
    )


def _bind(text: str, raws: list[_RawPhase], infusion_all: float | None) -> list[Phase]:
    """Give every phase the unit, route and infusion time it does not state (module docstring)."""

    def ambiguous(k: int, what: str, readings: list[str], fix: str) -> RegimenError:
        r = raws[k]
        shown = " or ".join(repr(x) for x in readings)
        return RegimenError(
            f"cannot read regimen {text!r}: phase {k + 1} ({r.source!r}, character {r.start + 1}) "
            f"states no {what}, and the other phases state different ones, so it could read as "
            f"{shown}. {fix}"
        )

    # unit
    units = sorted({r.unit for r in raws if r.unit is not None})
    for k, r in enumerate(raws):
        if r.unit is None:
            if not units:
                raise _err(
                    text, r.amount_pos, "a number without a unit (write e.g. '25 mg' or '15 mg/m2')"
                )
            if len(units) > 1:
                raise ambiguous(
                    k,
                    "dose unit",
                    [f"{r.amount:g} {u}" for u in units],
                    "Write the unit in every phase.",
                )
            r.unit = units[0]
    # route
    routes = sorted({r.route for r in raws if r.route is not None})
    for k, r in enumerate(raws):
        if r.route is None:
            if len(routes) > 1:
                raise ambiguous(
                    k,
                    "route",
                    [f"{r.source} {x}" for x in routes],
                    "Write the route ('iv' or 'oral') in every phase.",
                )
            r.route = routes[0] if routes else "iv"
    # infusion time, over the IV phases
    iv = [r for r in raws if r.route == "iv"]
    if infusion_all is not None and not any(r.infusion is None for r in iv):
        why = "every IV phase states its own" if iv else "the regimen has no IV dose"
        raise RegimenError(
            f"cannot read regimen {text!r}: the trailing infusion time "
            f"({_dur_text(infusion_all)}) applies to no phase: {why}; drop it"
        )
    stated = sorted({r.infusion for r in iv if r.infusion is not None})
    for k, r in enumerate(raws):
        if r.route != "iv" or r.infusion is not None:
            continue
        if infusion_all is not None:
            r.infusion = infusion_all
        elif len(stated) > 1:
            readings = [
                f"{r.source} " + ("bolus" if d == 0 else f"over {_dur_text(d)}") for d in stated
            ]
            raise ambiguous(
                k,
                "infusion time",
                readings,
                "Write the infusion time (or 'bolus') in every phase, or give one for the phases "
                "that state none at the end (', over 30 min').",
            )
        else:
            r.infusion = stated[0] if stated else 0.0
    out = []
    for r in raws:
        amount, unit = r.amount, r.unit
        if unit in _UNIT_TO_MG:
            amount, unit = amount * _UNIT_TO_MG[unit], "mg"
        try:
            out.append(
                Phase(
                    amount=amount,
                    unit=unit,
                    interval_h=r.interval,
                    count=r.count,
                    infusion_h=r.infusion or 0.0,
                    cycle_h=r.cycle_h,
                    cycles=r.cycles,
                    route=r.route,
                )
            )
        except RegimenError as e:
            raise RegimenError(
                f"cannot read regimen {text!r}: phase {r.source!r} (character {r.start + 1}): {e}"
            ) from None
    return out


def _parse(text: str, max_doses: int = MAX_DOSES) -> tuple[list[Phase], list[Hold]]:
    if not isinstance(text, str) or not text.strip():
        raise RegimenError(f"a regimen must be a non-empty string, got {text!r}")
    low = text.lower().replace("×", "x")
    parts = [p.strip() for p in low.split(",")]
    main, mods = parts[0], parts[1:]
    holds: list[tuple[str, list[tuple[int, int]]]] = []
    infusion_all = None
    offset_mods = len(main) + 1
    for mod in mods:
        pos = low.find(mod, offset_mods)
        offset_mods = pos + len(mod)
        if not mod:
            continue
        if holds and re.fullmatch(r"[\d\s\-–and]+", mod):
            # "hold doses 3, 4": the comma split the list
            holds[-1][1].extend(_numbers(text, pos, mod))
            continue
        m = _HOLD.match(mod)
        if m:
            kind = "week" if m.group(1).startswith("week") else "dose"
            holds.append((kind, _numbers(text, pos + m.start(2), m.group(2))))
            continue
        m = _INFUSION_RX.fullmatch(mod)
        if m:
            if infusion_all is not None:
                raise _err(text, pos, "a second trailing infusion time")
            infusion_all = float(m.group(1)) * _unit_hours(m.group(2))
            if not (infusion_all > 0 and math.isfinite(infusion_all)):
                raise _err(text, pos, "an infusion duration must be a positive number")
            continue
        raise _err(
            text, pos, "unknown modifier (expected 'hold week N', 'hold dose N' or '30 min')"
        )
    raws = []
    offset = 0
    for chunk in re.split(r"\bthen\b", main):
        s = chunk.strip()
        start = low.find(s, offset) if s else offset
        raws.append(_parse_phase(text, s, max(start, 0), max_doses))
        offset = start + len(s)
    # the text says how the drug is given: a route, an infusion time or "bolus" (IV)
    stated = infusion_all is not None or any(
        r.route is not None or r.infusion is not None for r in raws
    )
    phases = _bind(text, raws, infusion_all)
    return phases, [Hold(kind, tuple(r)) for kind, r in holds], stated


def parse_regimen(text: str, *, max_doses: int = MAX_DOSES) -> Regimen:
    """Parse a regimen string (grammar in the module docstring).

    Parameters
    ----------
    text : str
        E.g. ``"175 mg q1w x3 then 75 mg q1w x9 over 30 min, hold week 5"``.
    max_doses : int
        Most doses the regimen may have (default :data:`MAX_DOSES`).

    Raises
    ------
    RegimenError
        If the text cannot be read (the message says where and why), is ambiguous (it shows
        the readings), or describes an impossible regimen.
    """
    return Regimen(text, max_doses=max_doses)


def _numbers(text: str, pos: int, s: str) -> list[tuple[int, int]]:
    """Hold numbers and ranges (``"5-6, 9"`` -> ``[(5, 6), (9, 9)]``), not expanded."""
    out: list[tuple[int, int]] = []
    for part in re.split(r",|\band\b", s):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*[-–]\s*(\d+)", part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if b < a:
                raise _err(text, pos, f"range {a}-{b} runs backwards")
            out.append((a, b))
        elif part.isdigit():
            out.append((int(part), int(part)))
        else:
            raise _err(text, pos, f"'{part}' is not a number or range")
    if not out or min(a for a, _ in out) < 1:
        raise _err(text, pos, "hold numbers start at 1")
    return out
