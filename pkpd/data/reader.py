"""Read and validate NONMEM-style datasets.

The reader accepts the NM-TRAN event vocabulary every pharmacometrician knows
(``ID TIME EVID AMT RATE DUR CMT II ADDL SS DV MDV``), plus ``LLOQ``/``BLQ`` for censored
observations, ``DVID`` or ``ENDPOINT`` for multi-endpoint data, ``DVU`` for the unit of each
record's ``DV`` and ``LLOQ``, ``STUDY`` for multi-study data and any other column as a covariate.

Endpoint codes belong to the model (``read_dataset(..., model=...)``): the temsirolimus model
numbers its endpoints 1-5 (:data:`DEFAULT_ENDPOINTS`), and a one-endpoint model such as
``one_cmt_oral`` takes the data's one ``DVID`` code, whatever it is. ``endpoints={code: name}``
maps codes explicitly. Observations are converted on read to the unit of their endpoint
(:data:`CANONICAL_UNITS`, or the model's): ``DVU`` per record or ``dv_units={endpoint: unit}``
say what the data are in (:func:`unit_factor` lists what converts). Every problem found is collected and raised at once as a
:class:`~pkpd.data.errors.DatasetError`, each with its line, column, value and what was expected.

Numbers follow one strict ASCII grammar (:data:`NUMBER_PATTERN`): an optional sign, digits with
an optional fraction, and an optional exponent (``12``, ``-0.5``, ``.5``, ``1e3``). Underscores,
non-ASCII digits, ``inf`` and ``infinity`` are not numbers; ``nan`` (like ``.``, ``NA`` and an
empty cell) means missing.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pandas as pd

from pkpd.data.dataset import Dataset
from pkpd.data.errors import MAX_PROBLEMS_SHOWN_PER_KIND, DatasetError, Problem

#: Endpoint codes used by pkpd's flagship temsirolimus model when ``DVID`` is numeric and no
#: mapping is given. Users with their own models pass ``endpoints={code: name}``.
DEFAULT_ENDPOINTS: dict[int, str] = {
    1: "temsirolimus",
    2: "sirolimus",
    3: "s6k",
    4: "vegf",
    5: "pd1_cd8",
}
#: Endpoint name given to observations when the data have no DVID/ENDPOINT column.
SINGLE_ENDPOINT = "conc"
#: pkpd's unit of each endpoint it knows: ``DV`` and ``LLOQ`` are converted to it on read (or to
#: the model's unit, with ``read_dataset(..., model=...)``).
CANONICAL_UNITS: dict[str, str] = {
    "conc": "ng/mL",
    "temsirolimus": "ng/mL",
    "sirolimus": "ng/mL",
    "s6k": "% of baseline",
    "vegf": "pg/mL",
    "pd1_cd8": "%",
}
#: What ``DVU`` (and ``dv_units=``) accept, for messages.
DV_UNITS_ACCEPTED = (
    "a concentration: g/L, mg/mL, mg/dL, mg/L, ug/mL (µg/mL, mcg/mL), ug/L (µg/L), ng/mL, ng/L, "
    "pg/mL; mol/L, mmol/L, umol/L (µM), nmol/L (nM), pmol/L with the endpoint's molar mass; "
    "or % (also '% of baseline')"
)

#: Columns with a fixed meaning (after upper-casing). Everything else is a covariate.
EVENT_COLUMNS = ("TIME", "EVID", "AMT", "RATE", "DUR", "CMT", "II", "ADDL", "SS", "DV", "MDV")
CENSORING_COLUMNS = ("LLOQ", "BLQ")
ENDPOINT_COLUMNS = ("DVID", "ENDPOINT")
UNIT_COLUMNS = ("AMTU", "AMT_UNIT", "DOSE_UNIT")
#: Unit of each record's DV and LLOQ (text, e.g. ``mg/L``); empty: the endpoint's unit.
DV_UNIT_COLUMNS = ("DVU", "DV_UNIT")
STUDY_COLUMNS = ("STUDY", "STUDYID")
#: The occasion of each record (integer or text): a period of time within a subject, e.g. a
#: sampled cycle, over which inter-occasion variability holds parameters constant.
OCCASION_COLUMNS = ("OCC", "OCCASION")
COMMENT_COLUMN = "C"
#: Columns that may hold text; a line starting with ``C`` can be data only when its first column
#: is one of these (a number column cannot hold a value starting with ``C``).
TEXT_COLUMNS = (
    ("ID",) + STUDY_COLUMNS + OCCASION_COLUMNS + ENDPOINT_COLUMNS + UNIT_COLUMNS + DV_UNIT_COLUMNS
)
#: Columns that apply to dose records only; on any other record they would be ignored.
DOSE_ONLY_COLUMNS = ("ADDL", "II", "SS", "RATE", "DUR")

#: Most additional doses (``ADDL``) one record may imply; more is reported before any expansion.
#: Raise it with ``read_dataset(max_implied_doses=...)``.
MAX_IMPLIED_DOSES_PER_RECORD = 10_000
#: Most additional doses (``ADDL`` summed over its records) one subject may imply. Raise it with
#: ``read_dataset(max_implied_doses_per_subject=...)``.
MAX_IMPLIED_DOSES_PER_SUBJECT = 100_000

#: The number grammar (ASCII only): optional sign, digits with optional fraction (or a fraction
#: alone), optional exponent.
NUMBER_PATTERN = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_NUMBER = re.compile(NUMBER_PATTERN + r"\Z")
_INFINITY = re.compile(r"[+-]?inf(?:inity)?\Z", re.IGNORECASE)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")

_MISSING = {"", ".", "na", "nan", "null", "none"}
_DOSE_UNITS = {
    "mg": "mg",
    "mg/m2": "mg/m2",
    "mg/m^2": "mg/m2",
    "mg/m²": "mg/m2",
    "mg/m**2": "mg/m2",
}
_DELIMITER_NAMES = {",": "commas", "\t": "tabs", ";": "semicolons", "whitespace": "blanks"}


class DataUnitWarning(UserWarning):
    """The observations look like they are in another unit than the model's (e.g. mg/L read as
    ng/mL); see :func:`pkpd.models.predict.concentration_scale_warning`."""


# Concentration units: mass (ng per mL per unit), amount (nmol per mL per unit), volumes (mL).
_MASS_NG = {"g": 1e9, "mg": 1e6, "ug": 1e3, "ng": 1.0, "pg": 1e-3}
_MOLE_NMOL = {"mol": 1e9, "mmol": 1e6, "umol": 1e3, "nmol": 1.0, "pmol": 1e-3}
_VOLUME_ML = {"l": 1e3, "dl": 1e2, "ml": 1.0}
_MOLAR_SHORT = {"m": "mol/l", "mm": "mmol/l", "um": "umol/l", "nm": "nmol/l", "pm": "pmol/l"}
_PERCENT = {"%", "percent", "%ofbaseline", "percentofbaseline"}
_UNIT_TEXT = re.compile(r"([a-z]+)/([a-z]+)")


def _unit_kind(text: str) -> tuple[str, float] | None:
    """``("mass", ng/mL)``, ``("molar", nmol/mL)`` or ``("percent", 1)`` per unit of ``text``.

    Case, blanks and the spelling of micro (``u``, ``µ``, ``μ``, ``mc``) do not matter.
    ``None`` for a unit pkpd does not know.
    """
    s = str(text).strip().replace("\u00b5", "u").replace("\u03bc", "u").lower().replace(" ", "")
    s = s.replace("mcg", "ug")
    if s in _PERCENT:
        return "percent", 1.0
    s = _MOLAR_SHORT.get(s, s)
    m = _UNIT_TEXT.fullmatch(s)
    if m is None or m.group(2) not in _VOLUME_ML:
        return None
    a, b = m.groups()
    if a in _MASS_NG:
        return "mass", _MASS_NG[a] / _VOLUME_ML[b]
    if a in _MOLE_NMOL:
        return "molar", _MOLE_NMOL[a] / _VOLUME_ML[b]
    return None


def is_known_unit(text: str) -> bool:
    """Whether ``text`` is a unit :func:`unit_factor` knows (see :data:`DV_UNITS_ACCEPTED`)."""
    return _unit_kind(text) is not None


def unit_factor(unit: str, target: str, molar_mass: float | None = None) -> float:
    """The factor that converts a value in ``unit`` to ``target``.

    Mass concentrations convert among themselves (``mg/L`` → ``ng/mL``: 1000; ``µg/L`` =
    ``ng/mL``; ``pg/mL`` = ``ng/L``), and so do molar ones (``mol/L``, ``mmol/L``, ``µmol/L``
    or ``µM``, ``nmol/L`` or ``nM``, ``pmol/L``); between the two the molar mass (g/mol) is
    needed. ``%`` and ``% of baseline`` are the same unit. Case, blanks and the spelling of
    micro (``u``, ``µ``, ``mc``) do not matter.

    Parameters
    ----------
    unit, target : str
        Units as written, e.g. ``"mg/L"`` and ``"ng/mL"``.
    molar_mass : float, optional
        g/mol, to convert between mass and molar concentrations.

    Returns
    -------
    float
        ``value_in_target = value_in_unit * factor``.

    Raises
    ------
    ValueError
        Saying why the conversion is not possible (unknown unit, another kind of unit, molar
        mass needed).

    Examples
    --------
    >>> unit_factor("mg/L", "ng/mL"), unit_factor("µg/L", "ng/mL"), unit_factor("nM", "ng/mL", 914.2)
    (1000.0, 1.0, 0.9142)
    """
    u, t = _unit_kind(unit), _unit_kind(target)
    if u is None:
        raise ValueError(f"unknown unit {unit!r}; expected {DV_UNITS_ACCEPTED}")
    if t is None:
        raise ValueError(f"unknown unit {target!r}; expected {DV_UNITS_ACCEPTED}")
    (ku, fu), (kt, ft) = u, t
    if ku == kt:
        return fu / ft
    if {ku, kt} == {"mass", "molar"}:
        if molar_mass is None or not (molar_mass > 0 and math.isfinite(molar_mass)):
            raise ValueError(
                f"converting {unit} to {target} needs the molar mass (g/mol) of the substance"
            )
        return fu * molar_mass / ft if ku == "molar" else fu / (ft * molar_mass)
    kinds = {"mass": "a mass concentration", "molar": "a molar concentration", "percent": "a %"}
    raise ValueError(f"{unit} is {kinds[ku]} and cannot be converted to {target} ({kinds[kt]})")


@dataclass(frozen=True)
class _ModelEndpoints:
    """What the reader needs of a model: its name, DVID codes, endpoint units, molar masses."""

    name: str
    codes: dict[int, str] | None
    units: dict[str, str]
    molar_masses: dict[str, float]


def _model_endpoints(model) -> _ModelEndpoints | None:
    if model is None:
        return None
    from pkpd.models import load_model
    from pkpd.models.base import check_model

    if isinstance(model, str):
        try:
            model = load_model(model)
        except ValueError as e:
            raise DatasetError([Problem(f"argument model: {e}")]) from None
    try:
        check_model(model)
    except TypeError as e:
        raise DatasetError([Problem(f"argument model: {e}")]) from None
    codes = model.endpoint_codes
    return _ModelEndpoints(
        name=model.name,
        codes=None if codes is None else {int(k): str(v) for k, v in dict(codes).items()},
        units=dict(model.endpoint_units),
        molar_masses=dict(model.endpoint_molar_masses),
    )


@dataclass
class _RawTable:
    """Cells as text, with the location of each data row in the source."""

    header: list[str]
    cells: list[list[str]]
    locs: list[int]
    where: str
    name: str | None
    comment_lines: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    n_data_lines: int = 0


def _is_missing(s: str) -> bool:
    return s.strip().lower() in _MISSING


def _split_lines(text: str) -> list[str]:
    """Lines split at ``\\n``, ``\\r\\n`` or ``\\r`` only, as editors and CSV readers count them.

    (``str.splitlines`` also splits at form feeds, vertical tabs and Unicode separators, which
    would shift every later line number.)
    """
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _check_ignore(ignore: str | None) -> str | None:
    if ignore is None:
        return None
    if not isinstance(ignore, str) or len(ignore) != 1 or ignore.isspace():
        raise DatasetError(
            [
                Problem(
                    f"argument ignore={ignore!r} is not a comment character; expected one "
                    "non-blank character such as 'C', '#' or '@', or None to guess"
                )
            ]
        )
    return ignore


def _load_text(
    text: str, name: str | None, delimiter: str | None, ignore: str | None = None
) -> _RawTable:
    problems: list[Problem] = []
    if "\x00" in text and text.count("\x00") > len(text) // 4:
        problems.append(
            Problem(
                "the file looks like UTF-16 text (NUL bytes between the characters); "
                "save it as UTF-8 CSV"
            )
        )
        return _RawTable([], [], [], "line", name, [], problems)
    lines = _split_lines(text)
    comment_lines: list[int] = []
    header: list[str] | None = None
    header_upper: list[str] = []
    header_line = 0
    cells: list[list[str]] = []
    locs: list[int] = []
    n_data_lines = 0
    other_delimiter: dict[str, list[int]] = {}

    def split(line: str, d: str | None = None) -> list[str]:
        d = d or delim
        if d == "whitespace":
            return line.split()
        return [c.strip() for c in next(csv.reader([line], delimiter=d))]

    def names_columns(cells_: list[str]) -> bool:
        return bool({"ID", "TIME"} & {c.strip().upper() for c in cells_})

    def is_comment(stripped: str) -> bool:
        """A data line that cannot be a record of this file (see ``read_dataset``'s ``ignore``)."""
        if ignore is not None:
            return stripped[0] == ignore
        if stripped[0] == "#":
            return True
        if stripped[0] != "C":
            return False
        try:
            row = split(stripped)
        except csv.Error:  # pragma: no cover - csv is lenient
            return True
        if not row or row[0] == "C" or row[0][1:2].isspace() or header_upper[0] == COMMENT_COLUMN:
            return True  # NONMEM's comment mark ("C" or "C text"), or a C in the comment column
        if len(row) != len(header_upper):
            return True  # not a record of this table: a comment such as "C this is a note"
        return header_upper[0] not in TEXT_COLUMNS  # a number column cannot start with C

    delim = delimiter
    for lineno, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if not stripped:
            continue
        if header is None:
            first = stripped[0]
            if ignore is None and first == "#" or ignore is not None and first == ignore:
                if ignore is None or not names_columns(_split_any(stripped, delim)):
                    comment_lines.append(lineno)
                    continue
            guess = delim or (
                "," if "," in stripped else ("\t" if "\t" in stripped else "whitespace")
            )
            candidate = split(stripped, guess)
            # A first line starting with C is a header when it names columns (as in many NONMEM
            # files, whose header begins with a column called C); otherwise it is a comment.
            if ignore is None and first == "C" and not names_columns(candidate):
                comment_lines.append(lineno)
                continue
            delim = guess
            header = [c.strip() for c in candidate]
            header_upper = [c.upper() for c in header]
            header_line = lineno
            continue
        if is_comment(stripped):
            comment_lines.append(lineno)
            continue
        n_data_lines += 1
        try:
            row = split(stripped)
        except csv.Error as e:  # pragma: no cover - csv is lenient, kept for safety
            problems.append(Problem(f"cannot split the line into fields ({e})", line=lineno))
            continue
        if len(row) != len(header):
            hint = ""
            if len(row) == len(header) + 1 and row[-1] == "" and delim != "whitespace":
                hint = f" (the line ends with {delim!r}: remove the trailing delimiter)"
            problems.append(
                Problem(
                    f"has {len(row)} field{'' if len(row) == 1 else 's'} but the header "
                    f"(line {header_line}) has "
                    f"{len(header)}{hint}; expected one value per column (use '.' for missing)",
                    line=lineno,
                )
            )
            for alt in (",", "\t", ";", "whitespace"):
                if alt != delim and len(header) > 1 and len(split(stripped, alt)) == len(header):
                    other_delimiter.setdefault(alt, []).append(lineno)
                    break
            continue
        cells.append(row)
        locs.append(lineno)
    for alt, at in other_delimiter.items():
        n = len(at)
        problems.append(
            Problem(
                f"{n} data line{'s' if n > 1 else ''} (first: line {at[0]}) split into the "
                f"header's {len(header)} fields at {_DELIMITER_NAMES[alt]}, but the header "
                f"(line {header_line}) is separated by {_DELIMITER_NAMES.get(delim, repr(delim))}: "
                "the file probably mixes delimiters; save it with one delimiter throughout"
            )
        )
    if header is None:
        problems.append(Problem("no header line found; expected a header such as 'ID,TIME,...'"))
        header = []
    return _RawTable(header, cells, locs, "line", name, comment_lines, problems, n_data_lines)


def _split_any(line: str, delim: str | None) -> list[str]:
    """Fields of a line for a header check, guessing the delimiter when not known yet."""
    d = delim or ("," if "," in line else ("\t" if "\t" in line else "whitespace"))
    if d == "whitespace":
        return line.split()
    return next(csv.reader([line], delimiter=d))


def _load_frame(df: pd.DataFrame, ignore: str | None = None) -> _RawTable:
    header = [str(c) for c in df.columns]
    cells: list[list[str]] = []
    locs: list[int] = []
    comment_lines: list[int] = []

    def text(v: object) -> str:
        if v is None:
            return "."
        if isinstance(v, float) and math.isnan(v):
            return "."
        if v is pd.NA or v is pd.NaT:
            return "."
        if isinstance(v, (float, np.floating)):
            return repr(float(v))
        return str(v).strip()

    for i, row in enumerate(df.itertuples(index=False, name=None), start=1):
        r = [text(v) for v in row]
        if ignore is not None and r and r[0].startswith(ignore):
            comment_lines.append(i)
            continue
        cells.append(r)
        locs.append(i)
    return _RawTable(header, cells, locs, "row", None, comment_lines, [], len(cells))


def _decode(data: bytes, name: str) -> tuple[str | None, list[Problem]]:
    """Text of a file's bytes: UTF-8 (with or without BOM), or UTF-16 with a BOM."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16"), []
        except UnicodeDecodeError as e:
            return None, [Problem(f"file starts as UTF-16 text but is not ({e.reason})")]
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    if data.count(b"\x00") > len(data) // 4 and b"\x00" in data:
        return None, [
            Problem(
                "the file looks like UTF-16 text (NUL bytes between the characters); "
                "save it as UTF-8 CSV"
            )
        ]
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError:
        pass
    problems = []
    header: list[str] | None = None
    delim = "whitespace"
    for lineno, line in enumerate(re.split(rb"\r\n|\r|\n", data), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            text = None
            prefix = line[: e.start].decode("utf-8", errors="replace")
            column = None
            if header is not None:  # the column the bad byte is in, when the line is a record
                if delim == "whitespace":
                    j = len(prefix.split()) - (0 if prefix[-1:].isspace() or not prefix else 1)
                else:
                    j = prefix.count(delim)
                column = header[j] if 0 <= j < len(header) else None
            problems.append(
                Problem(
                    f"not UTF-8 text: the byte(s) {line[e.start : e.end].hex(' ')} at character "
                    f"{len(prefix) + 1} of the line cannot be read as UTF-8 (the file is "
                    "probably Latin-1 or Windows-1252); save it as UTF-8 CSV",
                    line=lineno,
                    column=column,
                )
            )
        stripped = text.strip() if text is not None else ""
        if header is None and stripped[:1] not in ("", "#"):
            names = {c.strip().upper() for c in _split_any(stripped, None)}
            if stripped[0] == "C" and not {"ID", "TIME"} & names:
                continue  # a comment before the header
            delim = "," if "," in stripped else ("\t" if "\t" in stripped else "whitespace")
            header = [c.strip().upper() for c in _split_any(stripped, delim)]
    return None, problems


def _load(
    source: str | os.PathLike | pd.DataFrame | io.TextIOBase,
    delimiter: str | None,
    ignore: str | None,
    max_shown: int | None,
) -> _RawTable:
    if isinstance(source, pd.DataFrame):
        return _load_frame(source, ignore)
    if isinstance(source, io.TextIOBase):
        return _load_text(source.read(), getattr(source, "name", None), delimiter, ignore)
    path = Path(source)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError([Problem(f"file not found: {path}")], source=str(path)) from None
    except OSError as e:
        raise DatasetError([Problem(f"cannot read the file: {e}")], source=str(path)) from None
    text, problems = _decode(data, str(path))
    if text is None:
        raise DatasetError(problems, source=str(path), max_shown_per_kind=max_shown)
    return _load_text(text, str(path), delimiter, ignore)


def _parse_float(s: str) -> float | None:
    """Float value of a cell, nan for missing, ±inf for infinite, None when not a number.

    A number is :data:`NUMBER_PATTERN` (ASCII, no underscores); ``inf``/``infinity`` and numbers
    too large for a float give ±inf, which callers report as not finite.
    """
    s = s.strip()
    if s.lower() in _MISSING:
        return math.nan
    if _NUMBER.match(s):
        return float(s)
    if _INFINITY.match(s):
        return -math.inf if s.startswith("-") else math.inf
    return None


def _id_text(s: str) -> str:
    """Canonical text of an ID or study cell; numeric IDs compare as numbers.

    ``1``, ``01``, ``1.0`` and ``+1`` are subject ``1``; ``1.50`` and ``1.5`` are ``1.5``. Other
    text (``CHN-001``) is kept as written, without surrounding blanks.
    """
    s = s.strip()
    if not _NUMBER.match(s):
        return s
    try:
        d = Decimal(s)
        if abs(d.adjusted()) > 30:
            return str(d.normalize())
        if d == d.to_integral_value():
            return str(int(d))
        return format(d.normalize(), "f")
    except (InvalidOperation, ArithmeticError):  # pragma: no cover - extreme exponents
        return s


def read_dataset(
    source: str | os.PathLike | pd.DataFrame,
    *,
    endpoints: Mapping[int, str] | Sequence[str] | None = None,
    model=None,
    dv_units: Mapping[str, str] | None = None,
    molar_mass: Mapping[str, float] | float | None = None,
    dose_unit: str = "mg",
    compartments: Mapping[int, str] | Sequence[int] | None = None,
    delimiter: str | None = None,
    ignore: str | None = None,
    max_implied_doses: int = MAX_IMPLIED_DOSES_PER_RECORD,
    max_implied_doses_per_subject: int = MAX_IMPLIED_DOSES_PER_SUBJECT,
    max_problems_shown: int | None = MAX_PROBLEMS_SHOWN_PER_KIND,
    occasions: str | None = None,
) -> Dataset:
    """Read a NONMEM-style dataset and check every record.

    Parameters
    ----------
    source : path or DataFrame
        A CSV (comma, tab or whitespace separated; UTF-8, or UTF-16 with a byte-order mark) or a
        :class:`pandas.DataFrame`. Lines end at ``\\n``, ``\\r\\n`` or ``\\r``; line numbers in
        problems and in ``records["LINE"]`` count those, as an editor does.
    endpoints : mapping or sequence, optional
        Numeric ``DVID`` codes to endpoint names (``{1: "conc", 2: "pca"}``; CLI ``--dvid
        1=conc,2=pca``), or the allowed names when the endpoint column holds names. Default:
        the ``model``'s codes (see ``model``); without a model, pkpd's temsirolimus codes
        :data:`DEFAULT_ENDPOINTS` (the summary says so). Without an endpoint column every
        observation is endpoint ``"conc"`` (or the model's one endpoint).
    model : str or model object, optional
        The model the data are for (``"one_cmt_oral"``, ``pkpd.models.load_model(...)``). It
        gives the ``DVID`` codes when ``endpoints`` is not given: a model declaring
        ``endpoint_codes`` (temsirolimus: 1 temsirolimus, 2 sirolimus, 3 s6k, 4 vegf, 5 pd1_cd8)
        uses them; a model with one endpoint (the generic PK models: ``conc``) takes the
        data's one code, whatever it is, and several codes are an error asking for a mapping.
        It also gives each endpoint's unit (its ``endpoint_units``), which ``DV`` and ``LLOQ``
        are converted to, and molar masses (``endpoint_molar_masses``). Compartments are not
        taken from it (pass ``compartments``).
    dv_units : mapping of str to str, optional
        Unit of the observations of each endpoint (``{"conc": "mg/L"}``; CLI ``--dv-unit
        conc=mg/L``) on records whose ``DVU`` cell is empty or where there is no ``DVU``
        column. ``DV`` and ``LLOQ`` are converted on read to the endpoint's unit (the model's,
        else :data:`CANONICAL_UNITS`; for an endpoint with neither, the first unit the data
        give it); the values as given are kept in ``records["DV_ORIG"]``,
        ``records["LLOQ_ORIG"]`` and their unit in ``records["DVU_ORIG"]``. Accepted units:
        :data:`DV_UNITS_ACCEPTED` (:func:`unit_factor`). Without a unit the data are taken to be
        in the endpoint's unit.
    molar_mass : mapping of str to float, or float, optional
        Molar mass (g/mol) of each endpoint's substance (one number: every endpoint), needed to
        convert molar units (``nmol/L``) to mass ones (``ng/mL``). The model's
        ``endpoint_molar_masses`` (temsirolimus 1030.3, sirolimus 914.2) are used otherwise.
    dose_unit : {"mg", "mg/m2"}
        Unit of ``AMT`` (and ``RATE``, per hour) where the data have no ``AMTU`` column or leave
        it empty. mg/m² doses are converted to mg with the subject's ``BSA`` on that record;
        both are kept (``AMT`` in mg, ``AMT_MG_M2``).
    compartments : mapping or sequence of int, optional
        The compartment numbers the model has. ``CMT`` outside them is an error. Without it,
        any positive integer is accepted; 0 or missing means the model's default compartment.
    delimiter : str, optional
        Field separator; detected from the header line when not given.
    ignore : str, optional
        The comment character, as NONMEM's ``IGNORE=C``/``IGNORE=#``/``IGNORE=@``: a line whose
        first non-blank character is ``ignore`` is a comment, and no other line is (unlike
        NONMEM's ``@``, which also skips lines starting with a letter, ``'@'`` means only ``@``
        here, since IDs may be text). Before the header, a line starting with it that names an
        ``ID`` or ``TIME`` column is the header. Default ``None`` guesses, so that text IDs
        such as ``CHN-001`` are data: a line is a comment when it starts with ``#``, or when it
        starts with ``C`` and its first field is ``C`` or ``C`` and a blank (``C some note``), or
        the first column is NONMEM's comment column ``C``, or the line does not split into the
        header's number of fields, or the first column holds numbers; rows whose ``C`` column
        holds ``C`` (or starts with ``#``) are comments too. For a DataFrame, ``ignore`` marks
        rows whose first cell starts with it. Every comment line is listed in
        :meth:`Dataset.summary_text` and in :attr:`Dataset.comment_lines`.
    max_implied_doses : int
        Most additional doses one record's ``ADDL`` may imply (default
        :data:`MAX_IMPLIED_DOSES_PER_RECORD`, 10,000); a larger ``ADDL`` is reported as a problem
        before any expansion (each implied dose takes memory in every later step).
    max_implied_doses_per_subject : int
        Most additional doses a subject's ``ADDL`` values may imply together (default
        :data:`MAX_IMPLIED_DOSES_PER_SUBJECT`, 100,000).
    max_problems_shown : int or None
        How many problems of each kind the :class:`DatasetError` message shows (default
        :data:`~pkpd.data.errors.MAX_PROBLEMS_SHOWN_PER_KIND`, 20; ``None``: all). The error's
        ``problems`` always holds every problem.
    occasions : str, optional
        Occasions derived from the dose records when the data have no ``OCC`` column (CLI
        ``pkpd validate --occasions RULE``); :func:`parse_occasion_rule` gives the grammar:
        ``"dose"`` (each dose record followed by an observation of the same subject before the
        next dose record starts an occasion) or ``"every N h|d|w"`` (cycles of N hours, days or
        weeks from the subject's first dose). An ``OCC`` (or ``OCCASION``) column gives each
        record's occasion itself (integer or text; every record needs one, and an occasion is
        one period: a label that comes back after another is an error). Occasions are in
        ``records["OCC"]`` (labels ``"1"``, ``"2"``, ... for a rule) and in the summary.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        With every problem in the data, each with its line, column, value and what was
        expected.

    Examples
    --------
    >>> import pandas as pd, pkpd
    >>> df = pd.DataFrame({"ID": [1, 1], "TIME": [0, 1], "AMT": [25, 0], "DV": [".", 12.0]})
    >>> ds = pkpd.read_dataset(df)
    >>> ds.n_subjects, ds.n_observations
    (1, 1)
    """
    ignore = _check_ignore(ignore)
    rule = parse_occasion_rule(occasions)
    info = _model_endpoints(model)
    table = _load(source, delimiter, ignore, max_problems_shown)
    limits = (int(max_implied_doses), int(max_implied_doses_per_subject))
    builder = _Builder(
        table, endpoints, dose_unit, compartments, ignore, limits, max_problems_shown, info
    )
    builder.set_units(dv_units, molar_mass)
    builder.occasion_rule = rule
    return builder.build()


_EVERY = re.compile(
    r"every\s+(" + NUMBER_PATTERN + r")\s*(h|hr|hrs|hours?|d|days?|w|wk|wks|weeks?)\Z", re.I
)
_HOURS = {"h": 1.0, "d": 24.0, "w": 168.0}


def parse_occasion_rule(rule: str | None) -> tuple[str, float] | None:
    """Parse a rule deriving occasions from the doses: ``"dose"`` → ``("dose", 0)``;
    ``"every 7 d"`` (``h``/``hours``, ``d``/``days``, ``w``/``weeks``) → ``("every", 168.0)``
    (hours); ``None`` → ``None``.

    Raises
    ------
    DatasetError
        For anything else, saying what was expected.
    """
    if rule is None:
        return None
    text = str(rule).strip()
    if text.lower() in ("dose", "doses"):
        return ("dose", 0.0)
    m = _EVERY.match(text)
    if m:
        hours = float(m.group(1)) * _HOURS[m.group(2)[0].lower()]
        if math.isfinite(hours) and hours > 0:
            return ("every", hours)
    raise DatasetError(
        [
            Problem(
                f"argument occasions (--occasions) = {rule!r} is not an occasion rule; expected "
                "'dose' (each dose followed by an observation starts an occasion) or "
                "'every N h', 'every N d', 'every N w' (cycles from the subject's first dose)"
            )
        ]
    )


def describe_occasion_rule(rule: tuple[str, float]) -> str:
    """Words for a parsed rule, e.g. ``"every 168 h from the first dose"``."""
    if rule[0] == "dose":
        return "each dose record followed by an observation starts one"
    return f"every {rule[1]:g} h from the subject's first dose"


def _derived_occasions(rule, ids, time, is_dose, is_obs) -> list[str]:
    """Occasion labels (``"1"``, ``"2"``, ...) of every record by a parsed rule.

    ``("dose", 0)``: a subject's occasion k starts at its k-th dose record that an observation
    record of the subject follows before its next dose record (records in file order; records
    before the first such dose are in occasion 1; a dose nothing is sampled after stays in the
    current occasion; ``ADDL`` doses belong to their record's occasion). ``("every", H)``:
    occasion ``floor((TIME - first dose time) / H) + 1``, records before the first dose in 1.
    """
    n = len(ids)
    by_subject: dict[str, list[int]] = {}
    for i, s in enumerate(ids):
        by_subject.setdefault(s, []).append(i)
    out = ["1"] * n
    for rows in by_subject.values():
        if rule[0] == "dose":
            k = 0
            for j, i in enumerate(rows):
                if is_dose[i]:
                    for later in rows[j + 1 :]:
                        if is_dose[later]:
                            break
                        if is_obs[later]:
                            k += 1
                            break
                out[i] = str(max(k, 1))
        else:
            doses = [time[i] for i in rows if is_dose[i] and math.isfinite(time[i])]
            if not doses:
                continue
            t0 = min(doses)
            for i in rows:
                if math.isfinite(time[i]) and time[i] > t0:
                    out[i] = str(int(math.floor((time[i] - t0) / rule[1])) + 1)
    return out


class _Builder:
    """Turns a text table into a validated :class:`Dataset`, collecting every problem."""

    def __init__(
        self,
        table,
        endpoints,
        dose_unit,
        compartments,
        ignore=None,
        limits=None,
        max_shown=None,
        model: _ModelEndpoints | None = None,
    ):
        self.t = table
        self.ignore = ignore
        self.occasion_rule: tuple[str, float] | None = None
        self.max_per_record, self.max_per_subject = limits or (
            MAX_IMPLIED_DOSES_PER_RECORD,
            MAX_IMPLIED_DOSES_PER_SUBJECT,
        )
        self.max_shown = max_shown
        self.problems: list[Problem] = list(table.problems)
        unit = _DOSE_UNITS.get(str(dose_unit).strip().lower())
        if unit is None:
            raise DatasetError(
                [
                    Problem(
                        f"argument dose_unit={dose_unit!r} is not a dose unit; expected 'mg' or 'mg/m2'"
                    )
                ],
                source=table.name,
            )
        self.dose_unit = unit
        self.model = model
        #: ``"given"``, ``"default"``, ``"model"`` (the model's codes), ``"single"`` (the data's
        #: one code maps to the model's one endpoint) or ``"names"`` (the model's names only).
        self.mapping_kind = "given"
        self.single_endpoint = SINGLE_ENDPOINT
        if model is not None and len(model.units) == 1:
            self.single_endpoint = next(iter(model.units))
        if endpoints is None and model is None:
            self.mapping_kind = "default"
            self.endpoint_codes = dict(DEFAULT_ENDPOINTS)
            self.endpoint_names = set(DEFAULT_ENDPOINTS.values()) | {SINGLE_ENDPOINT}
        elif endpoints is None:
            self.endpoint_names = {e.lower() for e in model.units}
            self.endpoint_names |= {v.lower() for v in (model.codes or {}).values()}
            if model.codes is not None:
                self.mapping_kind = "model"
                self.endpoint_codes = {k: v.lower() for k, v in model.codes.items()}
            else:
                self.mapping_kind = "single" if len(model.units) == 1 else "names"
                self.endpoint_codes = {}  # the single code is read from the data in build()
        elif isinstance(endpoints, Mapping):
            self.endpoint_codes = {}
            bad = []
            for k, v in endpoints.items():
                x = _parse_float(str(k))
                if x is None or not math.isfinite(x) or x != int(x):
                    bad.append(k)
                    continue
                self.endpoint_codes[int(x)] = str(v).strip().lower()
            if bad or any(not v for v in self.endpoint_codes.values()):
                raise DatasetError(
                    [
                        Problem(
                            f"argument endpoints={dict(endpoints)!r}: expected whole-number "
                            "DVID codes mapped to endpoint names, e.g. {1: 'conc', 2: 'pca'}"
                        )
                    ],
                    source=table.name,
                )
            self.endpoint_names = set(self.endpoint_codes.values())
        else:
            self.endpoint_codes = {}
            self.endpoint_names = {str(v).lower() for v in endpoints}
        self.dv_units: dict[str, str] = {}
        self.molar_mass: dict[str, float] = dict(model.molar_masses) if model else {}
        self.molar_mass_all: float | None = None
        self.compartments = None if compartments is None else {int(c) for c in compartments}
        self.bad_cells: set[tuple[int, str]] = set()

    def set_units(self, dv_units, molar_mass) -> None:
        """Check and keep ``dv_units`` and ``molar_mass`` (problems: no line, raised at once)."""
        problems = []
        known = sorted(self.endpoint_names)
        for ep, unit in dict(dv_units or {}).items():
            name = str(ep).strip().lower()
            if name not in self.endpoint_names:
                problems.append(
                    Problem(
                        f"argument dv_units (--dv-unit) names endpoint {ep!r}, which is not one of the "
                        f"endpoints ({', '.join(known)}); expected ENDPOINT=UNIT, e.g. conc=mg/L"
                    )
                )
            elif not is_known_unit(str(unit)):
                problems.append(
                    Problem(
                        f"argument dv_units (--dv-unit): unknown unit {unit!r} for endpoint {ep!r}; "
                        f"expected {DV_UNITS_ACCEPTED}"
                    )
                )
            else:
                self.dv_units[name] = str(unit).strip()
        if molar_mass is not None:
            items = (
                [(None, molar_mass)]
                if not isinstance(molar_mass, Mapping)
                else list(molar_mass.items())
            )
            for ep, mw in items:
                try:
                    value = float(mw)
                except (TypeError, ValueError):
                    value = math.nan
                if not (math.isfinite(value) and value > 0):
                    problems.append(
                        Problem(
                            f"argument molar_mass (--molar-mass): {mw!r} is not a molar mass; expected g/mol > 0"
                        )
                    )
                elif ep is None:
                    self.molar_mass_all = value
                else:
                    self.molar_mass[str(ep).strip().lower()] = value
        if problems:
            raise DatasetError(problems, source=self.t.name)

    # -- helpers -----------------------------------------------------------------------------
    def fail(self, problems):
        problems = sorted(problems, key=lambda p: (p.line is not None, p.line or 0))
        raise DatasetError(problems, source=self.t.name, max_shown_per_kind=self.max_shown)

    def add(self, message, i=None, column=None, value=None):
        if (i, column) in self.bad_cells:
            return  # the cell is already reported as unreadable
        line = None if i is None else self.t.locs[i]
        self.problems.append(Problem(message, line, column, value, self.t.where))

    def build(self) -> Dataset:
        t = self.t
        header = [h.strip().upper() for h in t.header]
        n_table_problems = len(self.problems)
        seen: dict[str, int] = {}
        for j, h in enumerate(header):
            if not h:
                self.problems.append(
                    Problem(f"header field {j + 1} is empty; every column needs a name")
                )
            elif h in seen:
                self.problems.append(
                    Problem(
                        f"column name appears twice (fields {seen[h] + 1} and {j + 1}); "
                        "expected unique column names",
                        column=h,
                    )
                )
            else:
                seen[h] = j
        for req in ("ID", "TIME"):
            if t.header and req not in seen:
                self.problems.append(
                    Problem(f"required column {req} is missing; found columns {', '.join(header)}")
                )
        ep_cols = [c for c in ENDPOINT_COLUMNS if c in seen]
        if len(ep_cols) > 1:
            self.problems.append(
                Problem("both DVID and ENDPOINT columns given; expected only one endpoint column")
            )
        study_cols = [c for c in STUDY_COLUMNS if c in seen]
        occ_cols = [c for c in OCCASION_COLUMNS if c in seen]
        unit_cols = [c for c in UNIT_COLUMNS if c in seen]
        dvu_cols = [c for c in DV_UNIT_COLUMNS if c in seen]
        if occ_cols and self.occasion_rule is not None:
            self.problems.append(
                Problem(
                    f"the data have an {occ_cols[0]} column and occasions (--occasions) were "
                    "also given as a rule; use one"
                )
            )
        for cols in (study_cols, occ_cols, unit_cols, dvu_cols):
            if len(cols) > 1:
                self.problems.append(
                    Problem(f"more than one column for the same role ({', '.join(cols)}); keep one")
                )
        if len(self.problems) > n_table_problems or not t.header:
            # With columns of unknown meaning, row checks would only add noise: fix the header
            # (and any malformed lines found while splitting) first.
            self.fail(self.problems)
        if not t.cells:
            if t.n_data_lines:
                k = t.n_data_lines
                what = "the data line" if k == 1 else f"all {k:,} data lines"
                self.problems.append(
                    Problem(
                        f"the table has no data rows: {what} could not be read (see the "
                        "problems listed)"
                    )
                )
            else:
                self.problems.append(Problem("the table has a header but no data rows"))
            self.fail(self.problems)

        n = len(t.cells)
        col = {h: [row[j] for row in t.cells] for h, j in seen.items()}

        # Comment rows flagged in a C column (NONMEM's comment column).
        keep = np.ones(n, dtype=bool)
        if COMMENT_COLUMN in col and self.ignore is None:
            for i, v in enumerate(col[COMMENT_COLUMN]):
                if v.strip().upper() == "C" or v.strip().startswith("#"):
                    keep[i] = False
        if not keep.all():
            idx = np.flatnonzero(keep)
            t.comment_lines = sorted(t.comment_lines + [t.locs[i] for i in np.flatnonzero(~keep)])
            t.cells = [t.cells[i] for i in idx]
            t.locs = [t.locs[i] for i in idx]
            col = {h: [v[i] for i in idx] for h, v in col.items()}
            n = len(idx)
            if n == 0:
                self.fail(self.problems + [Problem("every data row is a comment")])

        ep_col = ep_cols[0] if ep_cols else None
        study_col = study_cols[0] if study_cols else None
        occ_col = occ_cols[0] if occ_cols else None
        unit_col = unit_cols[0] if unit_cols else None
        dvu_col = dvu_cols[0] if dvu_cols else None
        text_cols = {"ID", COMMENT_COLUMN} | {
            c for c in (study_col, occ_col, unit_col, ep_col, dvu_col) if c
        }
        numeric_names = [h for h in seen if h not in text_cols]
        num: dict[str, np.ndarray] = {}
        for h in numeric_names:
            out = np.full(n, np.nan)
            for i, s in enumerate(col[h]):
                v = _parse_float(s)
                if v is None:
                    self.add("not a number; expected a numeric value or '.' for missing", i, h, s)
                    self.bad_cells.add((i, h))
                elif math.isinf(v):
                    self.add("not finite; expected a finite number ('.' for missing)", i, h, s)
                    self.bad_cells.add((i, h))
                else:
                    out[i] = v
            num[h] = out

        def numcol(name, default=np.nan):
            return num[name] if name in num else np.full(n, default, dtype=float)

        ids = []
        for i, s in enumerate(col["ID"]):
            if _is_missing(s):
                self.add("ID is missing; every record needs a subject ID", i, "ID", s)
            ids.append(_id_text(s))
        time = numcol("TIME")
        amt = numcol("AMT", 0.0)
        rate = numcol("RATE", 0.0)
        dur = numcol("DUR", 0.0)
        ii = numcol("II", 0.0)
        addl = numcol("ADDL", 0.0)
        ss = numcol("SS", 0.0)
        dv = numcol("DV")
        cmt = numcol("CMT", 0.0)
        lloq = numcol("LLOQ")
        blq_in = numcol("BLQ", 0.0)
        for arr in (amt, rate, dur, ii, addl, ss, cmt, blq_in):
            np.nan_to_num(arr, copy=False, nan=0.0)

        # EVID: given, or NM-TRAN's default (a record with AMT > 0 is a dose).
        if "EVID" in num:
            evid = num["EVID"].copy()
            for i in np.flatnonzero(np.isnan(evid)):
                evid[i] = 1.0 if amt[i] > 0 or (ss[i] == 1 and rate[i] > 0) else 0.0
        else:
            evid = np.where((amt > 0) | ((ss == 1) & (rate > 0)), 1.0, 0.0)
        for i, e in enumerate(evid):
            if e not in (0, 1, 2, 3, 4):
                self.add(
                    "unknown EVID; expected 0 (observation), 1 (dose), 2 (other), 3 (reset) "
                    "or 4 (reset and dose)",
                    i,
                    "EVID",
                    col["EVID"][i],
                )
        is_dose = np.isin(evid, (1, 4))
        is_obs = evid == 0

        if "MDV" in num:
            mdv = num["MDV"].copy()
            miss = np.isnan(mdv)
            mdv[miss] = np.where(is_obs[miss] & ~np.isnan(dv[miss]), 0.0, 1.0)
            for i in np.flatnonzero(~np.isin(mdv, (0, 1))):
                self.add("MDV must be 0 or 1", i, "MDV", col["MDV"][i])
        else:
            # Without MDV an observation row with no DV is a prediction-only time point.
            mdv = np.where(is_obs & ~np.isnan(dv), 0.0, 1.0)
            mdv[is_obs & np.isnan(dv) & (blq_in == 1)] = 0.0

        for i in range(n):
            self._check_record(
                i, col, time[i], evid[i], amt[i], rate[i], dur[i], ii[i], addl[i], ss[i],
                cmt[i], dv[i], mdv[i], lloq[i], blq_in[i],
            )  # fmt: skip

        # Endpoints
        endpoint = np.array([""] * n, dtype=object)
        if ep_col is None:
            endpoint[is_obs] = self.single_endpoint
        else:
            if self.mapping_kind == "single":
                self._single_code(col[ep_col], ep_col, is_obs & (mdv == 0))
            for i, s in enumerate(col[ep_col]):
                if not is_obs[i] and evid[i] != 2:
                    continue
                name = self._endpoint_name(s)
                if name is None:
                    if is_obs[i] and mdv[i] == 0 and (i, ep_col) not in self.bad_cells:
                        known = ", ".join(
                            f"{k}={v}" for k, v in sorted(self.endpoint_codes.items())
                        ) or ", ".join(sorted(self.endpoint_names))
                        hint = ""
                        if self.mapping_kind == "default":
                            hint = (
                                " (pkpd's default temsirolimus codes: no model given; give the "
                                "model (--model, read_dataset(..., model=...)) or map the codes "
                                "(--dvid 1=NAME,..., endpoints={1: NAME, ...}))"
                            )
                        elif self.model is not None and self.mapping_kind != "given":
                            hint = (
                                f" (the endpoints of model {self.model.name}; map other codes "
                                "with --dvid CODE=NAME or endpoints={CODE: NAME})"
                            )
                        self.add(f"unknown endpoint; expected one of {known}{hint}", i, ep_col, s)
                    name = ""
                endpoint[i] = name

        # Units of DV and LLOQ: converted to each endpoint's unit; the values as given are kept.
        dv_orig, lloq_orig = dv.copy(), lloq.copy()
        dvu = np.array([""] * n, dtype=object)
        dvu_orig = np.array([""] * n, dtype=object)
        self._convert_units(col, dvu_col, endpoint, dv, lloq, dvu, dvu_orig)

        # Studies
        if study_col is None:
            study = ["1"] * n
        else:
            study = [_id_text(s) for s in col[study_col]]
            present = {s for s in study if not _is_missing(s)}
            if len(present) > 1 or any(_is_missing(s) for s in study):
                for i, s in enumerate(study):
                    if _is_missing(s):
                        self.add(
                            f"STUDY is missing but the data hold several studies "
                            f"({', '.join(sorted(present)) or 'none named'}); give every record its study",
                            i,
                            study_col,
                            col[study_col][i],
                        )
            only = next(iter(present)) if len(present) == 1 else None
            study = [only if (_is_missing(s) and only) else s for s in study]

        # Occasions: given per record, or derived from the doses by a rule
        occ = None
        if occ_col is not None:
            occ = [_id_text(s) for s in col[occ_col]]
            for i, s in enumerate(occ):
                if _is_missing(s):
                    self.add(
                        f"{occ_col} is missing; the data give occasions, so every record needs "
                        "the occasion it belongs to",
                        i,
                        occ_col,
                        col[occ_col][i],
                    )
            self._check_occasions(ids, occ, occ_col, col[occ_col])
        elif self.occasion_rule is not None:
            occ = _derived_occasions(self.occasion_rule, ids, time, is_dose, is_obs)

        # Dose units
        units = [self.dose_unit] * n
        if unit_col is not None:
            for i, s in enumerate(col[unit_col]):
                if _is_missing(s):
                    continue
                u = _DOSE_UNITS.get(s.strip().lower())
                if u is None:
                    if is_dose[i]:
                        self.add("unknown dose unit; expected 'mg' or 'mg/m2'", i, unit_col, s)
                else:
                    units[i] = u

        cov_names = [
            h
            for h in numeric_names
            if h not in EVENT_COLUMNS and h not in CENSORING_COLUMNS and h not in ENDPOINT_COLUMNS
        ]
        self._check_subjects(ids, time, evid, study, col, num, cov_names)
        self._check_duplicates()
        self._check_implied_doses(ids, evid, addl, col)

        bsa = num.get("BSA")
        amt_mg = amt.copy()
        rate_mg = rate.copy()
        amt_m2 = np.full(n, np.nan)
        # Fill covariates within subject first (nearest earlier record, then later) so that a
        # dose on a record without BSA still finds the subject's BSA.
        cov_filled = self._filled_covariates(ids, num, cov_names)
        bsa_f = cov_filled.get("BSA")
        for i in range(n):
            if not is_dose[i]:
                continue
            b = bsa_f[i] if bsa_f is not None else np.nan
            if units[i] == "mg/m2":
                if not (b > 0):
                    where_col = "BSA" if bsa is not None else unit_col or "AMT"
                    self.add(
                        "dose given in mg/m2 but the subject has no positive BSA (m2) to convert "
                        "it to mg; add a BSA column",
                        i,
                        where_col,
                        col["BSA"][i] if bsa is not None else None,
                    )
                    continue
                amt_m2[i] = amt[i]
                amt_mg[i] = amt[i] * b
                if rate[i] > 0:
                    rate_mg[i] = rate[i] * b
            elif b > 0:
                amt_m2[i] = amt[i] / b

        if self.problems:
            self.fail(self.problems)

        # BLQ: flagged, or DV below a given LLOQ.
        blq = (blq_in == 1) | (is_obs & ~np.isnan(lloq) & ~np.isnan(dv) & (dv < lloq))
        lloq_eff = lloq.copy()
        fill = blq & np.isnan(lloq_eff)
        lloq_eff[fill] = dv[fill]

        records = pd.DataFrame(
            {
                "LINE": np.asarray(t.locs, dtype=np.int64),
                "ID": pd.array(ids, dtype=object),
                "STUDY": pd.array(study, dtype=object),
                "TIME": time,
                "EVID": evid.astype(np.int64),
                "AMT": amt_mg,
                "AMT_MG_M2": amt_m2,
                "AMT_UNIT": pd.array(units, dtype=object),
                "RATE": rate_mg,
                "DUR": dur,
                "CMT": cmt.astype(np.int64),
                "II": ii,
                "ADDL": addl.astype(np.int64),
                "SS": ss.astype(np.int64),
                "DV": dv,
                "MDV": mdv.astype(np.int64),
                "LLOQ": lloq_eff,
                "BLQ": blq,
                "DVU": pd.array(list(dvu), dtype=object),
                "DV_ORIG": dv_orig,
                "LLOQ_ORIG": lloq_orig,
                "DVU_ORIG": pd.array(list(dvu_orig), dtype=object),
                "ENDPOINT": pd.array(list(endpoint), dtype=object),
            }
        )
        if occ is not None:
            records.insert(records.columns.get_loc("STUDY") + 1, "OCC", pd.array(occ, dtype=object))
        for c in cov_names:
            records[c] = cov_filled[c]
        if occ_col is not None:
            occasion_source = f"column {occ_col}"
        elif self.occasion_rule is not None:
            occasion_source = describe_occasion_rule(self.occasion_rule)
        else:
            occasion_source = ""
        return Dataset(
            occasions=occasion_source,
            records=records,
            covariates=tuple(cov_names),
            source=t.name,
            where=t.where,
            comment_lines=tuple(t.comment_lines),
            filled_covariate_cells=self.filled_cells,
            input_header=tuple(t.header),
            input_cells=tuple(tuple(row) for row in t.cells),
            endpoint_column=ep_col,
            endpoint_codes=self._codes_used(col.get(ep_col), endpoint) if ep_col else (),
            endpoint_mapping=self._mapping_text(),
            endpoint_units=tuple(self.units_of.items()),
        )

    # -- endpoints and units -------------------------------------------------------------------
    def _single_code(self, cells, ep_col, counted) -> None:
        """A one-endpoint model takes the data's one numeric code (read on observations)."""
        first: dict[int, int] = {}
        count: dict[int, int] = {}
        rows: list[int] = []
        for i, s in enumerate(cells):
            if not counted[i] or _is_missing(s):
                continue
            v = _parse_float(s)
            if v is None or not math.isfinite(v) or v != int(v):
                continue  # a name, or not a code: checked as such
            c = int(v)
            first.setdefault(c, i)
            count[c] = count.get(c, 0) + 1
            rows.append(i)
        if len(first) == 1:
            self.endpoint_codes = {next(iter(first)): self.single_endpoint}
            return
        if not first:
            return
        ep = self.single_endpoint
        codes = sorted(first, key=first.get)
        listing = ", ".join(
            f"{c} ({count[c]} observation{'s' if count[c] > 1 else ''}, first on "
            f"{self.t.where} {self.t.locs[first[c]]})"
            for c in codes
        )
        cli = ",".join(f"{c}={ep if k == 0 else 'NAME'}" for k, c in enumerate(codes))
        api = ", ".join(f"{c}: '{ep if k == 0 else 'NAME'}'" for k, c in enumerate(codes))
        i2 = first[codes[1]]
        self.add(
            f"model {self.model.name!r} predicts one endpoint ({ep}), but the observations carry "
            f"{len(codes)} DVID codes: {listing}; say which code is {ep}: --dvid {cli} on the "
            f"command line, read_dataset(..., endpoints={{{api}}}) in Python (leave the other "
            f"endpoints out of a fit with --endpoint {ep}, or set MDV=1 on their records)",
            i2,
            ep_col,
            cells[i2],
        )
        for i in rows:
            self.bad_cells.add((i, ep_col))

    def _target_unit(self, ep: str) -> str | None:
        """The unit ``ep``'s observations are converted to: the model's, else pkpd's."""
        if self.model is not None:
            units = {k.lower(): v for k, v in self.model.units.items()}
            if units.get(ep):
                return units[ep]
        return CANONICAL_UNITS.get(ep)

    def _convert_units(self, col, dvu_col, endpoint, dv, lloq, dvu, dvu_orig) -> None:
        """DV and LLOQ of every record with an endpoint in the endpoint's unit (in place)."""
        self.units_of: dict[str, str] = {}
        argument_reported: set[str] = set()
        for i, ep in enumerate(endpoint):
            if not ep:
                continue
            cell = col[dvu_col][i] if dvu_col is not None else "."
            from_cell = not _is_missing(cell)
            given = cell.strip() if from_cell else self.dv_units.get(ep, "")
            target = self.units_of.get(ep) or self._target_unit(ep)
            if target is None and given and is_known_unit(given):
                target = given  # an endpoint pkpd has no unit for: the data's first unit
            if target is None:
                if given and from_cell:
                    self.add(f"unknown DV unit; expected {DV_UNITS_ACCEPTED}", i, dvu_col, cell)
                continue
            self.units_of[ep] = target
            dvu[i] = target
            if not given:
                continue
            dvu_orig[i] = given
            if given.lower().replace(" ", "") == target.lower().replace(" ", ""):
                continue
            mw = self.molar_mass.get(ep, self.molar_mass_all)
            try:
                factor = unit_factor(given, target, mw)
            except ValueError as e:
                if not is_known_unit(given):
                    why = f"unknown DV unit; expected {DV_UNITS_ACCEPTED}"
                elif "molar mass" in str(e):
                    why = (
                        f"{given} is a molar unit: converting it to {target} (the unit of "
                        f"endpoint {ep}) needs the molar mass; pass molar_mass={{'{ep}': "
                        f"G_PER_MOL}} (CLI: --molar-mass {ep}=G_PER_MOL)"
                    )
                else:
                    why = f"{e} (the unit of endpoint {ep})"
                if from_cell:
                    self.add(why, i, dvu_col, cell)
                elif ep not in argument_reported:
                    argument_reported.add(ep)
                    self.problems.append(
                        Problem(f"argument dv_units (--dv-unit {ep}={given}): {why}")
                    )
                continue
            dv[i] *= factor
            lloq[i] *= factor

    def _codes_used(self, cells, endpoint) -> tuple[tuple[str, str], ...]:
        """``(code as read, endpoint)`` of every code the data's records use, in order."""
        out: dict[str, str] = {}
        for s, ep in zip(cells, endpoint, strict=True):
            if not ep or _is_missing(s):
                continue
            v = _parse_float(s)
            code = str(int(v)) if v is not None and math.isfinite(v) else s.strip().lower()
            out.setdefault(code, ep)
        return tuple(out.items())

    def _mapping_text(self) -> str:
        name = self.model.name if self.model is not None else None
        return {
            "default": "pkpd's default temsirolimus codes: no model given (choose one with "
            "--model, or map the codes with --dvid)",
            "model": f"the codes of model {name}",
            "single": f"model {name} predicts one endpoint, which takes the data's one code",
            "names": f"the endpoint names of model {name}",
            "given": "as mapped (--dvid, endpoints=)",
        }[self.mapping_kind]

    def _endpoint_name(self, s: str) -> str | None:
        if _is_missing(s):
            return None
        v = _parse_float(s)
        if v is not None and not math.isnan(v):
            if math.isfinite(v) and v == int(v) and int(v) in self.endpoint_codes:
                return self.endpoint_codes[int(v)]
            return None
        name = s.strip().lower()
        return name if name in self.endpoint_names else None

    def _check_record(
        self, i, col, time, evid, amt, rate, dur, ii, addl, ss, cmt, dv, mdv, lloq, blq
    ):
        def raw(c):
            return col[c][i] if c in col else None

        if math.isnan(time):
            if raw("TIME") is not None and _parse_float(raw("TIME")) is not None:
                self.add("TIME is missing; every record needs a time (h)", i, "TIME", raw("TIME"))
        elif time < 0:
            self.add("negative TIME; expected time >= 0 (h)", i, "TIME", raw("TIME"))
        for name, v in (("AMT", amt), ("II", ii), ("DUR", dur), ("LLOQ", lloq)):
            if v < 0:
                self.add(f"negative {name}; expected {name} >= 0", i, name, raw(name))
        if not (rate >= 0 or rate in (-1, -2)):
            self.add(
                "RATE must be >= 0 (0 = bolus), -1 (rate modelled) or -2 (duration modelled)",
                i,
                "RATE",
                raw("RATE"),
            )
        if addl < 0 or addl != int(addl):
            self.add("ADDL must be a whole number >= 0", i, "ADDL", raw("ADDL"))
        if ss not in (0, 1, 2):
            self.add("SS must be 0, 1 or 2", i, "SS", raw("SS"))
        if cmt != int(cmt) or cmt < 0 or cmt >= 2**31:
            self.add(
                "CMT must be a whole number >= 1 (0 or '.' = the model's default compartment)",
                i,
                "CMT",
                raw("CMT"),
            )
        elif self.compartments is not None and cmt != 0 and int(cmt) not in self.compartments:
            self.add(
                f"unknown CMT; the model's compartments are {sorted(self.compartments)}",
                i,
                "CMT",
                raw("CMT"),
            )
        if blq not in (0, 1):
            self.add("BLQ must be 0 or 1", i, "BLQ", raw("BLQ"))
        kinds = {
            0: "an observation record",
            1: "a dose record",
            2: "an other-type record",
            3: "a reset record",
            4: "a reset-and-dose record",
        }
        if blq == 1 and evid in kinds and evid != 0:
            self.add(
                f"BLQ=1 on {kinds[int(evid)]} (EVID {int(evid)}); only observations (EVID 0) "
                "are censored; expected BLQ 0 or '.'",
                i,
                "BLQ",
                raw("BLQ"),
            )
        is_dose = evid in (1, 4)
        if is_dose:
            const_inf = ss == 1 and rate > 0 and amt == 0
            if amt == 0 and not const_inf:
                self.add(
                    f"dose record (EVID {int(evid)}) without AMT; expected AMT > 0 "
                    "(or SS=1 with AMT=0 and RATE > 0 for a steady-state constant infusion)",
                    i,
                    "AMT",
                    raw("AMT") if raw("AMT") is not None else ".",
                )
            if rate != 0 and dur != 0:
                self.add(
                    "RATE and DUR both given; give one (RATE in mg/h, or DUR in h)",
                    i,
                    "DUR",
                    raw("DUR"),
                )
            if addl > 0 and not ii > 0:
                self.add("ADDL > 0 without II; expected II > 0 (h)", i, "II", raw("II") or ".")
            if ss in (1, 2) and not ii > 0 and not const_inf:
                self.add(
                    "SS dose without II; expected II > 0 (h), unless SS=1 with AMT=0 and RATE > 0",
                    i,
                    "II",
                    raw("II") or ".",
                )
        elif evid in kinds:
            for name, v in (("ADDL", addl), ("II", ii), ("SS", ss), ("RATE", rate), ("DUR", dur)):
                if v != 0:
                    self.add(
                        f"{name} on {kinds[int(evid)]} (EVID {int(evid)}) would be ignored: "
                        f"{name} applies to doses only; expected 0 or '.' (or EVID 1 if this is "
                        "a dose)",
                        i,
                        name,
                        raw(name),
                    )
        if evid == 0:
            if amt != 0:
                self.add(
                    "observation record (EVID 0) with a non-zero AMT; expected AMT 0 or '.', or "
                    "EVID 1 if this is a dose",
                    i,
                    "AMT",
                    raw("AMT"),
                )
            if mdv == 0 and math.isnan(dv) and blq != 1:
                self.add(
                    "DV is missing on an observation with MDV=0; give DV, set MDV=1, or flag BLQ=1",
                    i,
                    "DV",
                    raw("DV") or ".",
                )
            if blq == 1 and math.isnan(lloq) and math.isnan(dv):
                self.add(
                    "BLQ=1 but neither LLOQ nor DV gives the quantification limit", i, "LLOQ", "."
                )
            if blq == 1 and dv > lloq:
                self.add(
                    f"BLQ=1 but DV is above LLOQ ({raw('LLOQ')}); a censored observation has DV "
                    "<= LLOQ or '.': fix DV or LLOQ, or set BLQ=0 if DV was measured",
                    i,
                    "DV",
                    raw("DV"),
                )
        elif evid == 3 and amt != 0:
            self.add("reset record (EVID 3) with AMT; expected AMT 0", i, "AMT", raw("AMT"))

    def _check_implied_doses(self, ids, evid, addl, col):
        """ADDL within the bounds per record and per subject (before anything is expanded)."""
        per_subject: dict[str, float] = {}
        reported: set[str] = set()
        for i, s in enumerate(ids):
            if evid[i] not in (1, 4) or not addl[i] > 0 or addl[i] != int(addl[i]):
                continue
            if addl[i] > self.max_per_record:
                self.add(
                    f"ADDL implies more than {self.max_per_record:,} additional doses, the "
                    "limit per record; check the value, or raise the limit with "
                    "read_dataset(max_implied_doses=...)",
                    i,
                    "ADDL",
                    col["ADDL"][i],
                )
                continue
            total = per_subject.get(s, 0.0) + addl[i]
            per_subject[s] = total
            if total > self.max_per_subject and s not in reported:
                reported.add(s)
                self.add(
                    f"subject {s}'s ADDL values imply more than {self.max_per_subject:,} "
                    "additional doses together by this record, the limit per subject; check "
                    "the values, or raise the limit with "
                    "read_dataset(max_implied_doses_per_subject=...)",
                    i,
                    "ADDL",
                    col["ADDL"][i],
                )

    def _check_occasions(self, ids, occ, occ_col, cells) -> None:
        """An occasion is one period of a subject's records: a label that comes back after
        another label of the same subject is an error (give the later period its own)."""
        current: dict[str, str] = {}
        closed: dict[str, set[str]] = {}
        for i, (s, o) in enumerate(zip(ids, occ, strict=True)):
            if _is_missing(s) or _is_missing(o):
                continue
            prev = current.get(s)
            if prev is not None and o != prev:
                closed.setdefault(s, set()).add(prev)
                if o in closed[s]:
                    self.add(
                        f"occasion {o} of subject {s} comes back after occasion {prev}; an "
                        "occasion is one period of time (give the later period its own label)",
                        i,
                        occ_col,
                        cells[i],
                    )
            current[s] = o

    def _check_subjects(self, ids, time, evid, study, col, num, cov_names):
        n = len(ids)
        first_pos: dict[str, int] = {}
        last_pos: dict[str, int] = {}
        reported_split: set[str] = set()
        prev_i = None  # previous record with an ID (records with a missing ID are reported already)
        for i, s in enumerate(ids):
            if _is_missing(s):
                continue
            contiguous = prev_i is not None and ids[prev_i] == s
            if s in last_pos and not contiguous and s not in reported_split:
                self.add(
                    f"subject {s} appears again after other subjects (its earlier records end at "
                    f"{self.t.where} {self.t.locs[last_pos[s]]}); NONMEM would read this as a new "
                    "individual. Keep each subject's records together or give a new ID",
                    i,
                    "ID",
                    col["ID"][i],
                )
                reported_split.add(s)
            if contiguous:
                prev = time[prev_i]
                if time[i] < prev and time[i] >= 0 and evid[i] not in (3, 4):
                    self.add(
                        f"TIME decreases within subject {s} (previous record: {prev:g} h); "
                        "expected non-decreasing times (time may go back only on EVID 3/4 resets)",
                        i,
                        "TIME",
                        col["TIME"][i],
                    )
            first_pos.setdefault(s, i)
            last_pos[s] = i
            prev_i = i
        # A subject belongs to one study.
        subj_study: dict[str, str] = {}
        for i in range(n):
            s, st = ids[i], study[i]
            if _is_missing(st):
                continue
            if s in subj_study and subj_study[s] != st:
                self.add(
                    f"subject {ids[i]} is in study {subj_study[s]} on earlier records; a subject "
                    "belongs to one study",
                    i,
                    "STUDY",
                    st,
                )
            subj_study.setdefault(s, st)
        # Covariates given at least once per subject.
        for c in cov_names:
            given: dict[str, bool] = {}
            for i, s in enumerate(ids):
                if _is_missing(s):
                    continue  # a record without an ID is reported already
                given[s] = given.get(s, False) or not math.isnan(num[c][i])
            for s, ok in given.items():
                if not ok:
                    self.add(
                        f"covariate {c} is never given for subject {s}; expected a value on at "
                        "least one of its records",
                        first_pos[s],
                        c,
                        ".",
                    )

    def _check_duplicates(self):
        seen: dict[tuple, int] = {}
        for i, row in enumerate(self.t.cells):
            key = tuple(row)
            if key in seen:
                self.add(
                    f"duplicated record: identical to {self.t.where} {self.t.locs[seen[key]]}; "
                    "remove one copy",
                )
                self.problems[-1] = Problem(
                    self.problems[-1].message, self.t.locs[i], None, None, self.t.where
                )
            else:
                seen[key] = i

    def _filled_covariates(self, ids, num, cov_names):
        frame = pd.DataFrame({c: num[c] for c in cov_names})
        frame["_ID"] = ids
        self.filled_cells = int(frame[cov_names].isna().to_numpy().sum()) if cov_names else 0
        out = {}
        g = frame.groupby("_ID", sort=False)
        for c in cov_names:
            out[c] = g[c].transform(lambda s: s.ffill().bfill()).to_numpy(dtype=float)
        return out
