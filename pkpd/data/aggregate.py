"""Published arm-level summaries (aggregate data): the file format, read and checked.

One row is one published summary of one arm: e.g. "study PH1, arm 25 mg (n = 12): mean Cmax of
temsirolimus 585 ng/mL, CV 14%" (the label's figures). A fit takes such rows next to
individual data (or alone) through :func:`pkpd.fit`'s ``aggregate=`` (see
:mod:`pkpd.inference.aggregate` for the likelihood).

Columns (a header line; ``#`` lines are comments; names are case-insensitive):

=============  ========  =====================================================================
column         needed    what
=============  ========  =====================================================================
STUDY          yes       the study; the arm gets that study's between-study effect (a study
                         of the individual data, or a study of its own)
ARM            yes       the arm's label within the study
REGIMEN        yes       the arm's regimen, in pkpd's regimen grammar
                         (``"25 mg q1w x4 over 30 min"``, ``"100 mg once"``); the first dose
                         at time 0. Every row of an arm gives the same regimen
N              yes       subjects the summary is over (an integer ≥ 1)
ENDPOINT       yes       the model's endpoint (``temsirolimus``), or a ratio of two
                         (``sirolimus/temsirolimus``: each subject's metric divided)
METRIC         yes       ``cmax``, ``ctrough``, ``auc_tau`` (in WINDOW), ``auc_0_inf``
                         (first dose: AUC to the horizon plus the log-linear tail),
                         ``value`` (at TIME_H), ``change`` or ``change_pct`` (at TIME_H from
                         time 0)
WINDOW         no        ``c1`` (the first dosing interval, default) or ``ss`` (the last full
                         interval of the horizon), for ``cmax``, ``ctrough`` and ``auc_tau``
TIME_H         (yes)     hours from the first dose, for ``value``, ``change``, ``change_pct``
STATISTIC      yes       ``mean`` (arithmetic), ``geomean`` or ``median``
VALUE          yes       the published number, in UNIT
SPREAD         no        ``sd``, ``se``, ``cv`` (%), ``sd_log`` (SD of the log values) or
                         ``none`` (default when SPREAD_VALUE is empty)
SPREAD_VALUE   (yes)     the spread's number (SD and SE in UNIT)
UNIT           yes       unit of VALUE: a concentration unit pkpd converts (``ng/mL``,
                         ``mg/L``, ``nM`` with the endpoint's molar mass, ``%``), times ``h``
                         for AUCs (``ng*h/mL``), ``1`` for ratios
SOURCE         yes       where the number comes from (publication, table, page)
HORIZON_H      no        follow-up simulated for the arm (h); default: the end of the last
                         dosing interval (a single dose: 168 h); needed for open regimens
other columns  no        covariates of the arm's subjects (e.g. ``BSA``, ``WT``; the median
                         or mean the publication gives), numbers; every row of an arm gives
                         the same
=============  ========  =====================================================================

Which spreads go with which statistic: ``mean`` with ``sd``, ``se`` or ``cv`` (CV = SD/mean);
``geomean`` with ``cv`` (the geometric CV, :math:`\\sqrt{e^{s^2}-1}`) or ``sd_log``; ``median``
with none (an IQR or a range is not read). Every problem found is reported at once with its line
and column (:class:`pkpd.data.DatasetError`).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pkpd.data.errors import DatasetError, Problem
from pkpd.data.reader import _load, _parse_float, unit_factor

REQUIRED = (
    "STUDY",
    "ARM",
    "REGIMEN",
    "N",
    "ENDPOINT",
    "METRIC",
    "STATISTIC",
    "VALUE",
    "UNIT",
    "SOURCE",
)
OPTIONAL = ("WINDOW", "TIME_H", "SPREAD", "SPREAD_VALUE", "HORIZON_H")
#: Metrics over a dosing interval (WINDOW), at a time (TIME_H), and AUC to infinity.
INTERVAL_METRICS = ("cmax", "ctrough", "auc_tau")
TIME_METRICS = ("value", "change", "change_pct")
METRICS = INTERVAL_METRICS + ("auc_0_inf",) + TIME_METRICS
#: Metrics of concentrations only (the model's concentration endpoints).
CONCENTRATION_METRICS = INTERVAL_METRICS + ("auc_0_inf",)
STATISTICS = ("mean", "geomean", "median")
SPREADS = ("sd", "se", "cv", "sd_log", "none")
SPREADS_OF = {"mean": ("sd", "se", "cv", "none"), "geomean": ("cv", "sd_log", "none")}
WINDOWS = ("c1", "ss")
_AUC_UNIT = re.compile(r"^\s*(?P<a>[^*·. ]+)\s*[*·. ]\s*h\s*(?P<b>/.+)$")
_AUC_UNIT_LEAD = re.compile(r"^\s*h\s*[*·. ]\s*(?P<c>.+)$")
_AUC_UNIT_TAIL = re.compile(r"^\s*(?P<c>.+/[^*·. ]+)\s*[*·. ]\s*h\s*$")


@dataclass(frozen=True)
class ArmSummary:
    """One published summary (one row of an aggregate file), values as written.

    ``endpoints`` is one endpoint, or two for a ratio (numerator, denominator).
    ``value_model``/``spread_model`` are VALUE and SPREAD_VALUE in the model's unit (set by
    :func:`check_against_model`; ``None`` before).
    """

    line: int
    study: str
    arm: str
    regimen: str
    n: int
    endpoints: tuple[str, ...]
    metric: str
    window: str | None
    time_h: float | None
    statistic: str
    value: float
    spread: str
    spread_value: float | None
    unit: str
    source: str
    horizon_h: float | None
    covariates: dict[str, float] = field(default_factory=dict)
    value_model: float | None = None
    spread_model: float | None = None
    model_unit: str | None = None

    @property
    def endpoint(self) -> str:
        return "/".join(self.endpoints)

    @property
    def label(self) -> str:
        """``study/arm: statistic metric of endpoint [window or time]``, for tables."""
        where = f" {self.window}" if self.window else ""
        if self.time_h is not None:
            where = f" at {self.time_h:g} h"
        return f"{self.study}/{self.arm}: {self.statistic} {self.metric} {self.endpoint}{where}"

    @property
    def positive(self) -> bool:
        """Whether the metric is positive for every subject (exposures, ratios, levels):
        geometric means and medians are then taken on the log scale."""
        return self.metric not in ("change", "change_pct")


@dataclass(frozen=True)
class AggregateData:
    """Checked arm-level summaries (:func:`read_aggregate`)."""

    rows: tuple[ArmSummary, ...]
    source: str
    text: str
    covariates: tuple[str, ...]

    @property
    def studies(self) -> list[str]:
        """Studies in first-seen order."""
        return list(dict.fromkeys(r.study for r in self.rows))

    @property
    def arms(self) -> list[tuple[str, str]]:
        """``(study, arm)`` in first-seen order."""
        return list(dict.fromkeys((r.study, r.arm) for r in self.rows))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def table(self) -> pd.DataFrame:
        """One row per summary: where it is, what it says, and its value in the model's unit."""
        return pd.DataFrame(
            [
                {
                    "line": r.line,
                    "study": r.study,
                    "arm": r.arm,
                    "regimen": r.regimen,
                    "n": r.n,
                    "endpoint": r.endpoint,
                    "metric": r.metric,
                    "window": r.window or "",
                    "time_h": r.time_h,
                    "statistic": r.statistic,
                    "value": r.value,
                    "spread": r.spread,
                    "spread_value": r.spread_value,
                    "unit": r.unit,
                    "value_model": r.value_model,
                    "model_unit": r.model_unit or "",
                    "source": r.source,
                }
                for r in self.rows
            ]
        )


def _text_of(source) -> tuple[str, str]:
    """``(CSV text, name)`` of a path, an open text file or a DataFrame."""
    if isinstance(source, pd.DataFrame):
        return source.to_csv(index=False), "<DataFrame>"
    if isinstance(source, io.TextIOBase):
        return source.read(), str(getattr(source, "name", "<text>"))
    path = Path(os.fspath(source))
    try:
        return path.read_text(encoding="utf-8-sig"), str(path)
    except FileNotFoundError:
        raise DatasetError([Problem(f"file not found: {path}")], source=str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError([Problem(f"cannot read the file: {e}")], source=str(path)) from None


def read_aggregate(source, model=None) -> AggregateData:
    """Read and check an aggregate-data file (module docstring for the format).

    Parameters
    ----------
    source : path, open text file or pandas.DataFrame
    model : str or model, optional
        Also check endpoints and units against this model and convert VALUE and SPREAD_VALUE
        to its units (:func:`check_against_model`; a fit does this itself).

    Raises
    ------
    DatasetError
        With every problem found, each with its line and column.
    """
    text, name = _text_of(source)
    raw = _load(io.StringIO(text), None, "#", None)  # "#" only: a study may start with C
    if raw.problems and not raw.header:
        raise DatasetError(raw.problems, source=name)
    problems = list(raw.problems)
    where = raw.where
    header = [h.strip().upper() for h in raw.header]
    seen: dict[str, int] = {}
    for j, h in enumerate(header):
        if h in seen:
            problems.append(Problem(f"column {h} appears twice", column=h, where=where))
        seen.setdefault(h, j)
    missing = [c for c in REQUIRED if c not in seen]
    if missing:
        problems.append(
            Problem(
                f"missing column(s) {', '.join(missing)}; an aggregate file needs "
                f"{', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)}, covariates)",
                where=where,
            )
        )
        raise DatasetError(problems, source=name)
    covariates = tuple(h for h in header if h not in REQUIRED + OPTIONAL and h)
    rows = []
    if not raw.cells:
        problems.append(Problem("the file has no rows (one row per published summary)"))
    for cells, loc in zip(raw.cells, raw.locs, strict=True):
        row, row_problems = _read_row(cells, loc, seen, covariates, where)
        problems += row_problems
        if row is not None:
            rows.append(row)
    problems += _check_arms(rows, where)
    if model is not None:  # the rows read so far against the model: all problems at once
        rows, more = _against_model(rows, model)
        problems += more
    if problems:
        problems.sort(key=lambda p: (p.line is not None, p.line or 0))
        raise DatasetError(problems, source=name)
    return AggregateData(rows=tuple(rows), source=name, text=text, covariates=covariates)


def _read_row(cells, loc, col, covariates, where):
    problems: list[Problem] = []

    def cell(c):
        j = col.get(c)
        return cells[j].strip() if j is not None and j < len(cells) else ""

    def bad(c, message):
        problems.append(Problem(message, line=loc, column=c, value=cell(c) or None, where=where))

    def number(c, *, positive=False, required=True):
        s = cell(c)
        v = _parse_float(s)
        if v is None or (math.isnan(v) and required):
            bad(c, "expected a number" if s else "empty; expected a number")
            return None
        if math.isnan(v):
            return None
        if not math.isfinite(v) or (positive and v <= 0):
            bad(c, "expected a positive, finite number" if positive else "expected a finite number")
            return None
        return v

    def choice(c, options, default=None):
        s = cell(c).lower()
        if not s and default is not None:
            return default
        if s not in options:
            bad(c, f"expected one of {', '.join(options)}")
            return None
        return s

    for c in ("STUDY", "ARM", "UNIT", "SOURCE", "ENDPOINT"):
        if not cell(c):
            bad(c, "empty" + ("; cite the publication (table, page)" if c == "SOURCE" else ""))
    regimen = cell("REGIMEN")
    if not regimen:
        bad("REGIMEN", "empty; expected a regimen such as '25 mg q1w x4 over 30 min'")
    else:
        from pkpd.regimen import Regimen, RegimenError

        try:
            reg = Regimen(regimen)
        except RegimenError as e:
            bad("REGIMEN", f"not a regimen: {e}")
        else:
            if reg.open_ended and not cell("HORIZON_H"):
                bad("REGIMEN", "open-ended (no dose count): give HORIZON_H, the hours followed")
            units = {p.unit for p in reg.phases}
            for unit, cov in (("mg/m2", "BSA"), ("mg/kg", "WT")):
                if unit in units and cov not in covariates:
                    bad("REGIMEN", f"doses in {unit} need the arm's {cov} (a column {cov})")
    n = cell("N")
    n_val = None
    try:
        n_val = int(n)
        if n_val < 1 or str(n_val) != n.lstrip("+"):
            raise ValueError
    except ValueError:
        bad("N", "expected a whole number of subjects ≥ 1")
        n_val = None
    metric = choice("METRIC", METRICS)
    statistic = choice("STATISTIC", STATISTICS)
    value = number("VALUE")
    spread_given = bool(cell("SPREAD_VALUE"))
    spread = choice("SPREAD", SPREADS, default="sd" if spread_given else "none")
    if not cell("SPREAD") and spread_given:
        bad("SPREAD", "SPREAD_VALUE is given; say what it is (sd, se, cv or sd_log)")
        spread = None
    spread_value = None
    if spread not in (None, "none"):
        spread_value = number("SPREAD_VALUE", positive=True)
        if spread_value is not None and n_val is not None and n_val < 2:
            bad("SPREAD", "a spread needs N ≥ 2")
    elif spread == "none" and spread_given:
        bad("SPREAD_VALUE", "given with SPREAD none; leave it empty or say what it is")
    if statistic and spread and spread != "none":
        allowed = SPREADS_OF.get(statistic, ("none",))
        if spread not in allowed:
            hint = {
                "geomean": "a geometric mean goes with its geometric CV (cv) or the SD of the "
                "log values (sd_log)",
                "mean": "an arithmetic mean goes with sd, se or cv",
                "median": "a median's spread (IQR, range) is not read; give SPREAD none",
            }[statistic]
            bad("SPREAD", f"{spread} with STATISTIC {statistic}: {hint}")
    window = None
    time_h = None
    if metric in INTERVAL_METRICS:
        window = choice("WINDOW", WINDOWS, default="c1")
    elif cell("WINDOW"):
        bad("WINDOW", f"only cmax, ctrough and auc_tau have a window (METRIC is {metric})")
    if metric in TIME_METRICS:
        time_h = number("TIME_H")
        if time_h is not None and time_h <= 0:
            bad("TIME_H", "expected hours after the first dose, > 0")
            time_h = None
    elif cell("TIME_H") and metric is not None:
        bad("TIME_H", f"only value, change and change_pct are read at a time (METRIC is {metric})")
    horizon = number("HORIZON_H", positive=True, required=False) if cell("HORIZON_H") else None
    endpoints = tuple(e.strip() for e in cell("ENDPOINT").split("/"))
    if len(endpoints) > 2 or any(not e for e in endpoints):
        bad("ENDPOINT", "expected an endpoint, or a ratio of two as 'a/b'")
    if len(endpoints) == 2 and metric in ("change", "change_pct"):
        bad("ENDPOINT", "a ratio of changes is not read; give each change on its own row")
    positive_metric = metric not in ("change", "change_pct")
    if value is not None and statistic in ("geomean",) and value <= 0:
        bad("VALUE", "a geometric mean is positive")
    if value is not None and positive_metric and metric is not None and value <= 0:
        bad("VALUE", f"a {metric} is positive")
    covs = {}
    for c in covariates:
        v = number(c)
        if v is not None:
            covs[c] = v
    if problems:
        return None, problems
    return (
        ArmSummary(
            line=loc,
            study=cell("STUDY"),
            arm=cell("ARM"),
            regimen=regimen,
            n=n_val,
            endpoints=endpoints,
            metric=metric,
            window=window,
            time_h=time_h,
            statistic=statistic,
            value=value,
            spread=spread,
            spread_value=spread_value,
            unit=cell("UNIT"),
            source=cell("SOURCE"),
            horizon_h=horizon,
            covariates=covs,
        ),
        [],
    )


def _check_arms(rows, where) -> list[Problem]:
    """Rows of one arm agree on regimen, covariates and horizon; no summary twice."""
    problems = []
    first: dict[tuple[str, str], ArmSummary] = {}
    keys: dict[tuple, int] = {}
    for r in rows:
        a = first.setdefault((r.study, r.arm), r)
        for what, mine, theirs in (
            ("REGIMEN", r.regimen, a.regimen),
            ("HORIZON_H", r.horizon_h, a.horizon_h),
        ):
            if mine != theirs:
                problems.append(
                    Problem(
                        f"arm {r.study}/{r.arm} has {what} {theirs!r} on line {a.line}; every "
                        "row of an arm gives the same",
                        line=r.line,
                        column=what,
                        value=str(mine),
                        where=where,
                    )
                )
        for c, v in r.covariates.items():
            if v != a.covariates.get(c):
                problems.append(
                    Problem(
                        f"arm {r.study}/{r.arm} has {c} {a.covariates.get(c)!r} on line "
                        f"{a.line}; every row of an arm gives the same",
                        line=r.line,
                        column=c,
                        value=str(v),
                        where=where,
                    )
                )
        key = (r.study, r.arm, r.endpoint, r.metric, r.window, r.time_h, r.statistic)
        if key in keys:
            problems.append(
                Problem(
                    f"the same summary as line {keys[key]} ({r.label})",
                    line=r.line,
                    where=where,
                )
            )
        keys.setdefault(key, r.line)
    return problems


def _conc_part(unit: str) -> str | None:
    """The concentration unit inside an AUC unit (``ng*h/mL`` → ``ng/mL``), else None."""
    for pat in (_AUC_UNIT, _AUC_UNIT_LEAD, _AUC_UNIT_TAIL):
        m = pat.match(unit)
        if m:
            g = m.groupdict()
            return g["c"].strip() if "c" in g else (g["a"] + g["b"]).strip()
    return None


def model_unit(model, row: ArmSummary) -> str:
    """The unit, in the model's units, of what ``row`` summarises."""
    units = dict(model.endpoint_units)
    if len(row.endpoints) == 2 or row.metric == "change_pct":
        return "1" if len(row.endpoints) == 2 else "%"
    unit = units[row.endpoints[0]]
    if row.metric in ("auc_tau", "auc_0_inf"):
        amount, _, volume = unit.partition("/")
        return f"{amount}*h/{volume}" if volume else f"{unit}*h"
    return unit


def _factor(model, row: ArmSummary, target: str) -> float:
    """``value_in_model_unit = value * factor``; ValueError saying why not."""
    if target in ("1", "%"):
        ok = {"1": ("1", "", "ratio", "-"), "%": ("%", "percent")}[target]
        if row.unit.strip().lower() not in ok:
            raise ValueError(f"expected {' or '.join(repr(u) for u in ok if u)}")
        return 1.0
    molar = dict(model.endpoint_molar_masses).get(row.endpoints[0])
    if row.metric in ("auc_tau", "auc_0_inf"):
        given, want = _conc_part(row.unit), _conc_part(target) or target
        if given is None:
            raise ValueError(f"expected an AUC unit such as {target} (a concentration times h)")
        return unit_factor(given, want, molar)
    return unit_factor(row.unit, target, molar)


def check_against_model(agg: AggregateData, model) -> AggregateData:
    """``agg`` with values in the model's units; every row checked against ``model``'s
    endpoints (a concentration metric needs a concentration endpoint), all problems at once."""
    from dataclasses import replace

    rows, problems = _against_model(agg.rows, model)
    if problems:
        raise DatasetError(problems, source=agg.source)
    return replace(agg, rows=tuple(rows))


def _against_model(rows_in, model) -> tuple[list[ArmSummary], list[Problem]]:
    from dataclasses import replace

    from pkpd.inference.spec import resolve_model

    model = resolve_model(model)
    units = dict(model.endpoint_units)
    conc = set(model.concentration_endpoints)
    problems, rows = [], []
    for r in rows_in:
        wrong = [e for e in r.endpoints if e not in units]
        if wrong:
            problems.append(
                Problem(
                    f"model {model.name!r} has no endpoint {', '.join(map(repr, wrong))}; it has "
                    f"{', '.join(units)}",
                    line=r.line,
                    column="ENDPOINT",
                    value=r.endpoint,
                )
            )
            continue
        if r.metric in CONCENTRATION_METRICS and not all(e in conc for e in r.endpoints):
            problems.append(
                Problem(
                    f"{r.metric} is a concentration metric; {r.endpoint} is not among model "
                    f"{model.name!r}'s concentrations ({', '.join(sorted(conc))}); use value, "
                    "change or change_pct at a TIME_H",
                    line=r.line,
                    column="METRIC",
                    value=r.metric,
                )
            )
            continue
        if r.metric == "change_pct" and r.endpoints[0] in conc:
            problems.append(
                Problem(
                    f"change_pct of concentration {r.endpoint} (0 at the first dose) is not "
                    "defined; give its value at TIME_H",
                    line=r.line,
                    column="METRIC",
                    value=r.metric,
                )
            )
            continue
        target = model_unit(model, r)
        try:
            f = _factor(model, r, target)
        except ValueError as e:
            problems.append(
                Problem(
                    f"cannot convert to the model's unit {target}: {e}",
                    line=r.line,
                    column="UNIT",
                    value=r.unit,
                )
            )
            continue
        spread = r.spread_value
        if spread is not None and r.spread in ("sd", "se"):
            spread = spread * f
        rows.append(replace(r, value_model=r.value * f, spread_model=spread, model_unit=target))
    return rows, problems


def as_aggregate(source, model=None) -> AggregateData:
    """An :class:`AggregateData` from itself, a path, a text file or a DataFrame, checked
    against ``model`` when given."""
    if isinstance(source, AggregateData):
        return check_against_model(source, model) if model is not None else source
    if isinstance(source, Mapping):
        source = pd.DataFrame(source)
    return read_aggregate(source, model)


__all__ = [
    "AggregateData",
    "ArmSummary",
    "METRICS",
    "STATISTICS",
    "SPREADS",
    "as_aggregate",
    "check_against_model",
    "model_unit",
    "read_aggregate",
]
