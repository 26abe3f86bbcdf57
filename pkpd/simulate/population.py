"""Virtual populations: the covariates of simulated subjects.

Three sources, which can be mixed:

* **the fitted data** (default): whole subjects' covariate rows resampled with replacement from
  the fit's data (each subject's first record), so covariates keep their joint distribution
  (BSA with weight, say);
* **a table** (``pandas.DataFrame`` or a CSV path), one row per virtual subject; with
  ``n_subjects`` given and different from the number of rows, rows are resampled with
  replacement;
* **a mapping** ``{COLUMN: spec}`` that replaces or adds columns on top of the resampled data
  (or of nothing, when the fit has no covariates). ``spec`` is a number (every subject),
  a sequence with one value per subject, or a distribution written as text (or a tuple with
  the same name and numbers)::

      "normal(mean, sd)"               e.g. "HCT": "normal(38, 5)"
      "lognormal(median, sd_log)"      e.g. "WT": "lognormal(75, 0.2)"
      "truncnormal(mean, sd, low, high)"  e.g. "BSA": "truncnormal(1.85, 0.2, 1.3, 2.6)"
      "uniform(low, high)"
      "bernoulli(p)"                   0/1 flags, e.g. "CYP3A4_INH": "bernoulli(0.15)"

**A typical subject** (``pkpd.simulate(..., typical=True)``; :func:`reference_covariates`):
one subject whose covariates are the covariate effects' reference values (power, linear and
exponential effects: their ``reference``; categorical flags: 0), so every covariate multiplier
is 1, and the fitted data's median for the other covariates. A mapping then replaces or adds
columns of that one subject; a table is used as given (one row).

Column names are matched to the fitted data's ignoring case (the data reader stores them upper
case; any name the data may carry, ``CRCL_mL/min`` or ``Poids kg_é``, is fine). Units are those
of the data:
BSA m², WT kg, HCT %, AGE years, 0/1 flags.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pkpd.simulate.errors import SimulationError

_DIST = re.compile(r"^\s*([a-z_]+)\s*\((.*)\)\s*$", re.IGNORECASE)
_NARGS = {"normal": 2, "lognormal": 2, "truncnormal": 4, "uniform": 2, "bernoulli": 1}
_EXAMPLE = (
    "a number, one value per subject, or 'normal(mean, sd)', 'lognormal(median, sd_log)', "
    "'truncnormal(mean, sd, low, high)', 'uniform(low, high)', 'bernoulli(p)'"
)


def parse_distribution(spec) -> tuple[str, tuple[float, ...]]:
    """``"normal(1.85, 0.2)"`` or ``("normal", 1.85, 0.2)`` → ``("normal", (1.85, 0.2))``.

    Raises
    ------
    SimulationError
        For an unknown family, a wrong number of arguments or invalid values (sd <= 0, p
        outside [0, 1], low >= high).
    """
    if isinstance(spec, str):
        m = _DIST.match(spec)
        if not m:
            raise SimulationError(f"population: cannot read {spec!r}; expected {_EXAMPLE}")
        name, args = m.group(1).lower(), [a for a in m.group(2).split(",") if a.strip()]
        try:
            values = tuple(float(a) for a in args)
        except ValueError:
            raise SimulationError(
                f"population: {spec!r} has a non-numeric argument; expected {_EXAMPLE}"
            ) from None
    else:
        name, values = str(spec[0]).lower(), tuple(float(a) for a in spec[1:])
    if name not in _NARGS:
        raise SimulationError(
            f"population: unknown distribution {name!r}; expected one of {', '.join(_NARGS)}"
        )
    if len(values) != _NARGS[name]:
        raise SimulationError(
            f"population: {name} takes {_NARGS[name]} number(s), got {len(values)} ({spec!r})"
        )
    if not all(np.isfinite(values)):
        raise SimulationError(f"population: {spec!r} has a non-finite value")
    bad = (
        (name in ("normal", "lognormal", "truncnormal") and values[1] <= 0)
        or (name == "bernoulli" and not 0 <= values[0] <= 1)
        or (name == "uniform" and values[0] >= values[1])
        or (name == "truncnormal" and values[2] >= values[3])
        or (name == "lognormal" and values[0] <= 0)
    )
    if bad:
        raise SimulationError(
            f"population: invalid {spec!r} (scales must be > 0, lognormal median > 0, "
            "probabilities in [0, 1], low < high)"
        )
    return name, values


def _draw(name: str, values: tuple[float, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    if name == "normal":
        return rng.normal(values[0], values[1], n)
    if name == "lognormal":
        return values[0] * np.exp(rng.normal(0.0, values[1], n))
    if name == "uniform":
        return rng.uniform(values[0], values[1], n)
    if name == "bernoulli":
        return (rng.uniform(size=n) < values[0]).astype(float)
    from scipy.stats import truncnorm

    mean, sd, lo, hi = values
    return truncnorm.rvs(
        (lo - mean) / sd, (hi - mean) / sd, loc=mean, scale=sd, size=n, random_state=rng
    )


def column_name(name, known=()) -> str:
    """The covariate a population column or key names: one of ``known`` (the fitted data's
    columns) when it is the same name up to case, surrounding spaces and Unicode
    normalisation (``"Poids kg_é"`` for ``POIDS KG_É``), else the name in upper case."""
    key = unicodedata.normalize("NFC", str(name).strip()).upper()
    for k in known:
        if unicodedata.normalize("NFC", str(k).strip()).upper() == key:
            return str(k)
    return str(name).upper()


def fitted_covariates(spec) -> pd.DataFrame:
    """Per-subject covariates of the fitted data (first record of each subject)."""
    padded = spec.padded
    return pd.DataFrame(
        np.asarray(padded.data.cov, dtype=float).reshape(padded.n_subjects, -1),
        columns=[c.upper() for c in padded.covariates],
    )


def reference_covariates(spec, given=()) -> tuple[pd.DataFrame, str]:
    """The covariates of the typical subject (one row) and a one-line description.

    Each covariate effect's column is at the effect's ``reference`` (power, linear,
    exponential) or 0 (categorical), where its multiplier is 1; any other covariate of the fitted
    data is at its median over the fitted subjects. Columns in ``given`` (set by the caller) are
    left out of the conflict check below.

    Raises
    ------
    SimulationError
        When effects on one column disagree on the typical value (e.g. ``cl~WT power(ref=70)``
        and ``v~WT power(ref=60)``): no single subject has every multiplier 1; give the
        covariates with ``population=``.
    """
    base = fitted_covariates(spec)
    row = {c: float(np.median(base[c].to_numpy(dtype=float))) for c in base.columns}
    ref: dict[str, float] = {}
    names: dict[str, list[str]] = {}
    for eff in spec.effects:
        col = eff.covariate.upper()
        if col in given:
            continue
        v = 0.0 if eff.form == "categorical" else float(eff.reference)
        names.setdefault(col, []).append(eff.name)
        if col in ref and not np.isclose(ref[col], v, rtol=1e-12, atol=0.0):
            raise SimulationError(
                f"typical subject: the covariate effects {', '.join(names[col])} on {col} have "
                f"different reference values ({ref[col]:g} and {v:g}), so no one subject is at "
                f"all of them; give {col} yourself (population={{'{col}': value}})"
            )
        ref[col] = v
    row.update(ref)
    parts = []
    if ref:
        parts.append(
            "covariate effects at their references ("
            + ", ".join(f"{c}={v:g}" for c, v in ref.items())
            + ")"
        )
    others = {c: v for c, v in row.items() if c not in ref and c not in given}
    if others:
        parts.append(
            "other covariates at the fitted median ("
            + ", ".join(f"{c}={v:g}" for c, v in others.items())
            + ")"
        )
    how = "1 typical subject: " + ("; ".join(parts) if parts else "the fit has no covariates")
    return pd.DataFrame([row], index=[0], columns=list(row)).astype(float), how


def build_population(
    spec,
    population,
    n_subjects: int | None,
    rng: np.random.Generator,
    *,
    typical: bool = False,
) -> tuple[pd.DataFrame, str]:
    """The covariate table of the virtual subjects and a one-line description of its source.

    Parameters
    ----------
    spec : FitSpec
        The fit's spec (gives the fitted data's covariates).
    population : None, DataFrame, path or mapping
        See the module docstring.
    n_subjects : int or None
        Number of virtual subjects; ``None``: the table's rows, else 100.
    rng : numpy.random.Generator
    typical : bool
        One typical subject (:func:`reference_covariates`) instead of resampled fitted data; a
        mapping then sets columns of that subject, a table is used as is. ``n_subjects`` must be
        ``None`` or 1.

    Returns
    -------
    (pandas.DataFrame, str)
        One row per virtual subject, upper-case float columns; and the description.
    """
    if n_subjects is not None and (
        isinstance(n_subjects, bool) or not isinstance(n_subjects, (int, np.integer))
    ):
        raise SimulationError(f"n_subjects={n_subjects!r}; expected a whole number >= 1")
    if n_subjects is not None and n_subjects < 1:
        raise SimulationError(f"n_subjects={n_subjects}; expected a whole number >= 1")
    if typical and n_subjects not in (None, 1):
        raise SimulationError(
            f"n_subjects={n_subjects} with typical=True: a typical simulation has one subject "
            "(the typical one); leave n_subjects out or give 1"
        )
    base = fitted_covariates(spec)
    known = [*base.columns, *(eff.covariate for eff in spec.effects)]
    overrides: Mapping = {}
    if isinstance(population, (str, Path)):
        try:
            population = pd.read_csv(population, comment="#")
        except (OSError, ValueError) as e:
            raise SimulationError(f"population: cannot read table {population}: {e}") from None
    if isinstance(population, pd.DataFrame):
        table = population.rename(columns=lambda c: column_name(c, known))
        bad = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
        if bad:
            raise SimulationError(
                f"population table: column(s) {', '.join(bad)} are not numeric; covariates "
                "must be numbers (0/1 for flags)"
            )
        if len(table) == 0:
            raise SimulationError("population table has no rows")
        table = table.astype(float).reset_index(drop=True)
        if typical and len(table) != 1:
            raise SimulationError(
                f"population table has {len(table)} rows, but typical=True simulates one "
                "subject: give a table of one row (or a mapping of column to value)"
            )
        if n_subjects is None or n_subjects == len(table):
            out, how = table, f"table of {len(table)} subjects, used as given"
        else:
            idx = rng.integers(0, len(table), n_subjects)
            out = table.iloc[idx].reset_index(drop=True)
            how = f"{n_subjects} subjects resampled with replacement from a table of {len(table)}"
        _check_finite(out)
        return out, how
    if population is not None and not isinstance(population, Mapping):
        raise SimulationError(
            f"population must be None, a DataFrame, a CSV path or a mapping of column to value "
            f"or distribution; got {type(population).__name__}"
        )
    if population is not None:
        overrides = {column_name(k, known): v for k, v in population.items()}
    n = 100 if n_subjects is None else int(n_subjects)
    if typical:
        n = 1
        out, how = reference_covariates(spec, given=set(overrides))
    elif base.shape[1]:
        idx = rng.integers(0, len(base), n)
        out = base.iloc[idx].reset_index(drop=True)
        how = f"{n} subjects' covariates resampled with replacement from the {len(base)} fitted"
    else:
        out = pd.DataFrame(index=range(n))
        how = f"{n} subjects (the fit has no covariates)"
    described = []
    for col, v in overrides.items():
        if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
            out[col] = float(v)
            described.append(f"{col}={float(v):g}")
        elif isinstance(v, str) or (isinstance(v, tuple) and len(v) > 0 and isinstance(v[0], str)):
            name, values = parse_distribution(v)
            out[col] = _draw(name, values, n, rng)
            described.append(f"{col}~{name}({', '.join(f'{x:g}' for x in values)})")
        elif isinstance(v, (Sequence, np.ndarray, pd.Series)):
            arr = np.asarray(v, dtype=float)
            if arr.shape != (n,):
                raise SimulationError(
                    f"population: column {col} has {arr.size} values; expected one per subject "
                    f"({n})"
                )
            out[col] = arr
            described.append(f"{col}=given values")
        else:
            raise SimulationError(f"population: column {col}: {v!r} is not {_EXAMPLE}")
    if described:
        how += "; " + ", ".join(described)
    _check_finite(out)
    return out.astype(float), how


def _check_finite(table: pd.DataFrame) -> None:
    bad = [c for c in table.columns if not np.all(np.isfinite(table[c].to_numpy(dtype=float)))]
    if bad:
        raise SimulationError(
            f"population: column(s) {', '.join(bad)} have missing or non-finite values"
        )


def check_population(spec, table: pd.DataFrame, needed: Sequence[str] = ()) -> None:
    """Every covariate effect of the fit has its column, with values its form accepts.

    ``needed``: further columns (e.g. ``BSA`` for mg/m² regimens), each with the reason.
    """
    problems = []
    for eff in spec.effects:
        col = eff.covariate.upper()
        if col not in table.columns:
            problems.append(
                f"covariate effect {eff.name} needs column {col}, which the virtual population "
                f"lacks (it has {', '.join(table.columns) or 'no columns'}); add it to the "
                "population"
            )
            continue
        v = table[col].to_numpy(dtype=float)
        if eff.form == "power" and np.any(v <= 0):
            problems.append(
                f"covariate {col} has values <= 0, which effect {eff.name} (power) cannot take"
            )
        if eff.form == "categorical" and not np.all(np.isin(v, (0.0, 1.0))):
            problems.append(f"covariate {col} must be 0 or 1 for effect {eff.name} (categorical)")
    for col, why in needed:
        if col not in table.columns:
            problems.append(
                f"{why} needs column {col} in the virtual population; give it (e.g. "
                f"population={{'{col}': ...}})"
            )
        elif np.any(table[col].to_numpy(dtype=float) <= 0):
            problems.append(f"{why} needs {col} > 0 for every virtual subject")
    if problems:
        raise SimulationError("; ".join(problems))
