"""Dosing regimens as values, and a parser for the strings people write.

>>> from pkpd import Regimen
>>> r = Regimen("175 mg q1w x3 then 75 mg q1w x9")
>>> r.n_doses, r.to_events()["TIME"].tolist()[:4]
(12, [0.0, 168.0, 336.0, 504.0])

Grammar (case-insensitive; phases joined by ``then``; modifiers after commas)::

    regimen  := phase ("then" phase)* ("," modifier)*
    phase    := AMOUNT [route] [FREQ [COUNT] [FREQ [COUNT]]] [INFUSION] [route]
    AMOUNT   := number ("mg" | "mg/m2" | "mg/m²" | "mg/kg" | "g" | "ug" | "mcg")
    FREQ     := "q" [n] ("h" | "d" | "w") | "qd" | "qod" | "bid" | "tid" | "qid" | "daily"
              | "weekly" | "every" n ("hours" | "days" | "weeks") | "once"
    COUNT    := "x" n [doses|cycles] | "for" n ("doses" | "days" | "weeks" | "cycles")
    INFUSION := ["over"] number ("min" | "h")
    modifier := "hold" ("week" | "weeks" | "dose" | "doses") n ["-" n] ("," n)* | INFUSION

A second FREQ after a count repeats the block as a cycle: ``"15 mg/m2 qd x5 q2w"`` is five daily
doses every two weeks. A phase without a count is open-ended (only the last phase), and its
events need ``horizon_h``. ``hold week 5`` skips the doses due in week 5 (``[4*168, 5*168)`` h);
held doses are missed, not postponed.
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


class RegimenError(ValueError):
    """A regimen string or value that cannot be understood; the message says where and why."""


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
        Infusion duration (h); 0 = bolus.
    cycle_h : float or None
        Repeat the block every ``cycle_h`` hours (``qd x5 q2w``).
    cycles : int or None
        Number of cycles when ``cycle_h`` is set; ``None`` = open-ended.
    route : {"iv", "oral"}
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
        if not (self.amount > 0 and math.isfinite(self.amount)):
            raise RegimenError(f"dose amount must be a positive number, got {self.amount!r}")
        if self.unit not in ("mg", "mg/m2", "mg/kg"):
            raise RegimenError(f"dose unit {self.unit!r}; expected 'mg', 'mg/m2' or 'mg/kg'")
        if self.interval_h < 0 or self.infusion_h < 0:
            raise RegimenError("interval_h and infusion_h must be >= 0")
        if self.count is not None and self.count < 1:
            raise RegimenError(f"dose count must be >= 1, got {self.count}")
        if (self.count is None or self.count > 1) and not self.interval_h > 0:
            raise RegimenError("repeated doses need an interval (e.g. q1w)")
        if self.cycle_h is not None:
            if self.count is None:
                raise RegimenError("a cycle (e.g. 'qd x5 q2w') needs a dose count inside it")
            span = (self.count - 1) * self.interval_h
            if self.cycle_h <= span:
                raise RegimenError(
                    f"cycle length {self.cycle_h:g} h is not longer than the {self.count} doses "
                    f"inside it ({span:g} h)"
                )
        if self.route not in ("iv", "oral"):
            raise RegimenError(f"route {self.route!r}; expected 'iv' or 'oral'")

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

    def dose_times(self, horizon_h: float) -> np.ndarray:
        """Dose times relative to the phase start, up to (excluding) ``horizon_h``."""
        if self.cycle_h is None:
            n = self.count if self.count is not None else _n_before(horizon_h, self.interval_h)
            t = np.arange(n) * self.interval_h
        else:
            nc = self.cycles if self.cycles is not None else _n_before(horizon_h, self.cycle_h)
            inner = np.arange(self.count) * self.interval_h
            t = (np.arange(nc)[:, None] * self.cycle_h + inner[None, :]).ravel()
        return t[t < horizon_h] if math.isfinite(horizon_h) else t

    def describe(self) -> str:
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
            mins = self.infusion_h * 60
            s += f" over {mins:g} min" if mins < 60 or mins % 60 else f" over {self.infusion_h:g} h"
        return s


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


@dataclass(frozen=True)
class Hold:
    """Doses skipped: by week number (1-based, week k = ``[(k-1)*168, k*168)`` h) or dose number."""

    kind: str  # "week" | "dose"
    numbers: tuple[int, ...]


@dataclass(frozen=True, init=False)
class Regimen:
    """A dosing regimen: phases given one after the other, with optional holds.

    ``Regimen("25 mg q1w x12 over 30 min")`` parses a string (see the module docstring for the
    grammar); ``Regimen(phases=[Phase(...), ...])`` builds one from values.
    """

    phases: tuple[Phase, ...]
    holds: tuple[Hold, ...] = field(default=())
    text: str | None = field(default=None, compare=False)

    def __init__(self, phases=None, holds=(), *, text=None):
        if isinstance(phases, str):
            parsed = parse_regimen(phases)
            phases, holds, text = parsed.phases, parsed.holds, phases
        if phases is None or len(phases) == 0:
            raise RegimenError("a regimen needs at least one phase")
        phases = tuple(phases)
        for p in phases[:-1]:
            if p.open_ended:
                raise RegimenError(
                    f"phase '{p.describe()}' has no dose count but is followed by another phase; "
                    "only the last phase may be open-ended"
                )
        object.__setattr__(self, "phases", phases)
        object.__setattr__(self, "holds", tuple(holds))
        object.__setattr__(self, "text", text)

    def __str__(self) -> str:
        s = " then ".join(p.describe() for p in self.phases)
        for h in self.holds:
            s += f", hold {h.kind}{'s' if len(h.numbers) > 1 else ''} " + ",".join(
                str(n) for n in h.numbers
            )
        return s

    @property
    def open_ended(self) -> bool:
        return self.phases[-1].open_ended

    @property
    def n_doses(self) -> int:
        if self.open_ended:
            raise RegimenError("the regimen is open-ended; count doses over a horizon_h instead")
        return len(self.dose_table())

    def dose_table(self, horizon_h: float = math.inf) -> pd.DataFrame:
        """Dose times (h), amounts in the regimen's units, infusion durations, phase index."""
        rows = []
        start = 0.0
        for k, p in enumerate(self.phases):
            for t in p.dose_times(horizon_h - start):
                rows.append((start + t, p.amount, p.unit, p.infusion_h, p.interval_h, k, p.route))
            start += p.span_h()
        table = pd.DataFrame(
            rows, columns=["TIME", "AMOUNT", "UNIT", "INFUSION_H", "II", "PHASE", "ROUTE"]
        )
        table["DOSE_NUMBER"] = np.arange(1, len(table) + 1)
        keep = np.ones(len(table), dtype=bool)
        for h in self.holds:
            for n in h.numbers:
                if h.kind == "week":
                    keep &= ~((table["TIME"] >= (n - 1) * 168.0) & (table["TIME"] < n * 168.0))
                else:
                    keep &= table["DOSE_NUMBER"] != n
        return table[keep].reset_index(drop=True)

    def to_events(
        self,
        *,
        bsa_m2: float | None = None,
        weight_kg: float | None = None,
        horizon_h: float | None = None,
        cmt: int = 0,
        subject: str = "1",
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
        """
        horizon = math.inf if horizon_h is None else float(horizon_h)
        if self.open_ended and not math.isfinite(horizon):
            raise RegimenError(
                f"regimen '{self}' is open-ended; give horizon_h (h) to say how long to dose"
            )
        table = self.dose_table(horizon)
        amt = np.empty(len(table))
        amt_m2 = np.full(len(table), np.nan)
        for i, (a, u) in enumerate(zip(table["AMOUNT"], table["UNIT"], strict=True)):
            if u == "mg/m2":
                if bsa_m2 is None or not bsa_m2 > 0:
                    raise RegimenError(
                        f"regimen '{self}' doses in mg/m2; give bsa_m2 (m2, > 0) to convert to mg"
                    )
                amt[i], amt_m2[i] = a * bsa_m2, a
            elif u == "mg/kg":
                if weight_kg is None or not weight_kg > 0:
                    raise RegimenError(
                        f"regimen '{self}' doses in mg/kg; give weight_kg (kg, > 0) to convert"
                    )
                amt[i] = a * weight_kg
                amt_m2[i] = amt[i] / bsa_m2 if bsa_m2 else np.nan
            else:
                amt[i] = a
                amt_m2[i] = a / bsa_m2 if bsa_m2 else np.nan
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
        return Regimen(
            phases=[replace(p, amount=p.amount * factor) for p in self.phases], holds=self.holds
        )


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
    ("ROUTE", re.compile(r"(iv|i\.v\.|intravenous|infusion|bolus|po|oral)\b")),
]
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


def _parse_phase(text: str, s: str, offset: int) -> tuple[Phase, float | None]:
    """Parse one phase; returns the phase and an infusion duration if one was given."""
    pos = 0
    amount = unit = None
    freqs: list[float] = []
    counts: list[tuple[int, str | None]] = []
    infusion_h = None
    route = "iv"
    once = False
    while pos < len(s):
        if s[pos].isspace():
            pos += 1
            continue
        name, m = _match_token(s, pos)
        if m is None:
            if s[pos].isdigit() or s[pos] == ".":
                raise _err(
                    text, offset + pos, "a number without a unit (write e.g. '25 mg' or '15 mg/m2')"
                )
            raise _err(text, offset + pos, "unknown word")
        if name == "AMOUNT":
            if amount is not None:
                raise _err(text, offset + pos, "a second dose amount in one phase (use 'then')")
            amount = float(m.group(1))
            u = m.group(2).replace("²", "2").replace("^", "").replace("**", "")
            if u in _UNIT_TO_MG:
                amount *= _UNIT_TO_MG[u]
                u = "mg"
            unit = u
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
        elif name == "COUNT":
            counts.append((int(m.group(1)), m.group(2)))
        elif name == "FOR":
            k, u = int(m.group(1)), m.group(2)
            if u.startswith("dose"):
                counts.append((k, "doses"))
            elif u.startswith("cycle"):
                counts.append((k, "cycles"))
            else:
                if not freqs:
                    raise _err(text, offset + pos, f"'for {k} {u}' needs a frequency before it")
                span = k * _unit_hours(u)
                step = freqs[-1]
                if abs(span / step - round(span / step)) > 1e-9:
                    raise _err(text, offset + pos, f"{k} {u} is not a whole number of intervals")
                counts.append((int(round(span / step)), "for"))
        elif name == "INFUSION":
            infusion_h = float(m.group(1)) * _unit_hours(m.group(2))
            if infusion_h <= 0:
                raise _err(text, offset + pos, "an infusion duration must be positive")
        elif name == "ROUTE":
            r = m.group(1)
            route = "oral" if r in ("po", "oral") else "iv"
        pos = m.end()
    if amount is None:
        raise _err(text, offset, "no dose amount (e.g. '25 mg')")
    if amount <= 0:
        raise _err(text, offset, "the dose amount must be positive")
    if once and (freqs or counts):
        raise _err(text, offset, "'once' cannot have a frequency or a count")
    if len(freqs) > 2:
        raise _err(text, offset, "more than two frequencies in one phase")
    if len(counts) > len(freqs) and not (len(counts) == 1 and not freqs and counts[0][0] == 1):
        raise _err(text, offset, "a dose count ('x12') needs a frequency ('q1w') before it")
    interval = freqs[0] if freqs else 0.0
    count: int | None = counts[0][0] if counts else (1 if not freqs else None)
    cycle_h = freqs[1] if len(freqs) == 2 else None
    cycles: int | None = 1
    if cycle_h is not None:
        cycles = counts[1][0] if len(counts) > 1 else None
    try:
        phase = Phase(
            amount=amount,
            unit=unit,
            interval_h=interval,
            count=count,
            infusion_h=0.0,
            cycle_h=cycle_h,
            cycles=cycles,
            route=route,
        )
    except RegimenError as e:
        raise RegimenError(f"cannot read regimen {text!r}: {e}") from None
    return phase, infusion_h


def parse_regimen(text: str) -> Regimen:
    """Parse a regimen string (grammar in the module docstring); :class:`RegimenError` if not."""
    if not isinstance(text, str) or not text.strip():
        raise RegimenError(f"a regimen must be a non-empty string, got {text!r}")
    low = text.lower().replace("×", "x")
    parts = [p.strip() for p in low.split(",")]
    main, mods = parts[0], parts[1:]
    holds: list[Hold] = []
    infusion_all = None
    offset_mods = len(main) + 1
    for mod in mods:
        pos = low.find(mod, offset_mods)
        offset_mods = pos + len(mod)
        if not mod:
            continue
        if holds and re.fullmatch(r"[\d\s\-–and]+", mod):
            # "hold doses 3, 4": the comma split the list
            last = holds.pop()
            holds.append(Hold(last.kind, last.numbers + _numbers(text, pos, mod)))
            continue
        m = _HOLD.match(mod)
        if m:
            kind = "week" if m.group(1).startswith("week") else "dose"
            holds.append(Hold(kind, _numbers(text, pos + m.start(2), m.group(2))))
            continue
        m = _TOKENS[6][1].fullmatch(mod)
        if m:
            infusion_all = float(m.group(1)) * _unit_hours(m.group(2))
            continue
        raise _err(
            text, pos, "unknown modifier (expected 'hold week N', 'hold dose N' or '30 min')"
        )
    phases = []
    offset = 0
    for chunk in re.split(r"\bthen\b", main):
        start = low.find(chunk.strip(), offset) if chunk.strip() else offset
        phase, inf = _parse_phase(text, chunk.strip(), max(start, 0))
        offset = start + len(chunk.strip())
        phases.append((phase, inf))
    out = []
    for phase, inf in phases:
        dur = inf if inf is not None else (infusion_all or 0.0)
        out.append(replace(phase, infusion_h=dur))
    return Regimen(phases=out, holds=holds)


def _numbers(text: str, pos: int, s: str) -> tuple[int, ...]:
    nums: list[int] = []
    for part in re.split(r",|\band\b", s):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*[-–]\s*(\d+)", part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if b < a:
                raise _err(text, pos, f"range {a}-{b} runs backwards")
            nums.extend(range(a, b + 1))
        elif part.isdigit():
            nums.append(int(part))
        else:
            raise _err(text, pos, f"'{part}' is not a number or range")
    if not nums or min(nums) < 1:
        raise _err(text, pos, "hold numbers start at 1")
    return tuple(nums)
