"""Covariate effects chosen at fit time, for any model, without editing a priors file.

A *covariate expression* names the parameters, the data column, the form and its options::

    expr    := params "~" COLUMN [form] ["(" option ("," option)* ")"]
    params  := name ("," name)*                  e.g. "cl", "cl,v", "cl,v1,q,v2"
    COLUMN  := NAME | "`" NAME "`" | '"' NAME '"' | "'" NAME "'"
               the column's name as the data give it (any case). Bare, it is any characters
               but spaces, parentheses, "~" and quotes: CRCL_mL/min, Poids_kg_é, 体重,
               <b>WT</b>. A name with those needs quoting: `Poids kg`, "WT (kg)".
    form    := "power" | "linear" | "exponential" | "categorical"
    option  := "ref" "=" number                  reference value of the covariate
             | "fixed" "=" number                effect fixed (not estimated)
             | "prior" "=" "normal" "(" mean "," sd ")"      prior of an estimated effect
             | "prior" "=" "lognormal" "(" median "," sd_log ")"   (categorical effects)

Examples: ``"cl,v~WT"`` (power model on weight, exponents estimated), ``"cl~WT power(ref=70,
fixed=0.75)"`` (fixed allometry), ``"cl~CRCL linear(ref=90)"``, ``"cl~CYP3A4_INH categorical"``,
``"cl~CRCL_mL/min power"``, ``"cl~`Body weight (kg)` power(ref=70)"``.

Effect names are ``<parameter>_<column>`` in lower case, the column as its netCDF-safe name
(:func:`pkpd.inference.names.safe_names`): ``cl_wt``, ``cl_crcl_ml_min`` for ``CRCL_mL/min``.
Each effect keeps the column's own name (``covariate``), which printouts and reports show.

Defaults, chosen so a user need not know them but can always read them back from the fit
(attribute ``covariate_effects_detail``):

- form: ``categorical`` when the column holds only 0 and 1, otherwise ``power``;
- reference: the median of the column over subjects (power, linear, exponential);
- prior of an estimated effect: power ``Normal(0, 1)`` on the exponent (weakly informative:
  allometric 0.75 and 1 lie well inside); linear and exponential ``Normal(0, 0.5/sd)`` with
  ``sd`` the between-subject standard deviation of the column (a 2-SD change of the covariate
  moves the parameter by about ``exp(±1)``); categorical ``LogNormal(median 1, sd_log 0.5)``
  on the multiplier.

The multiplier of each form is that of :class:`pkpd.inference.priors.CovariateEffect`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence

import numpy as np

from pkpd.inference.names import safe_names
from pkpd.inference.priors import COVARIATE_FORMS, CovariateEffect, Dist

_EXPR = re.compile(
    r"^\s*(?P<params>[A-Za-z_][\w]*(?:\s*,\s*[A-Za-z_][\w]*)*)\s*~\s*"
    r"(?:`(?P<bq>[^`]+)`|\"(?P<dq>[^\"]+)\"|'(?P<sq>[^']+)'|(?P<col>[^\s()~`\"']+))"
    r"\s*(?P<form>[A-Za-z]+)?\s*(?:\((?P<opts>.*)\))?\s*$"
)
_PRIOR = re.compile(r"^(normal|lognormal)\s*\(\s*([^,()]+)\s*,\s*([^,()]+)\s*\)$", re.IGNORECASE)


class CovariateSpecError(ValueError):
    """A covariate expression that cannot be understood; the message says where and why."""


def _key(name: str) -> str:
    """How a written column name is matched to the data's: stripped, NFC, upper case (as the
    data reader stores names)."""
    return unicodedata.normalize("NFC", str(name).strip()).upper()


def is_expression(text: str) -> bool:
    """True for an expression (``"cl~WT ..."``), False for a name of an effect in a priors file."""
    return "~" in text


def _split_options(opts: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in opts:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur)
    return [o.strip() for o in out]


def _number(text: str, what: str, expr: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise CovariateSpecError(f"covariate {expr!r}: {what} {text!r} is not a number") from None
    if not np.isfinite(v):
        raise CovariateSpecError(f"covariate {expr!r}: {what} must be finite")
    return v


def parse_expression(
    expr: str,
    *,
    parameters: Sequence[str],
    columns: Mapping[str, np.ndarray],
) -> list[CovariateEffect]:
    """The effects one expression describes (one per parameter).

    Parameters
    ----------
    expr : str
        See the module docstring.
    parameters : sequence of str
        The model's estimated parameters (effects on others are errors).
    columns : mapping
        Covariate column name (upper case) → per-subject values; used to check the column
        exists and to derive default references and priors.
    """
    m = _EXPR.match(expr)
    if not m:
        raise CovariateSpecError(
            f"covariate {expr!r} is not an expression like 'cl,v~WT power(ref=70, fixed=0.75)' "
            "(parameters ~ data column, then optionally the form and options in parentheses; "
            "quote a column name with spaces or parentheses: cl~`Body weight (kg)` power)"
        )
    params = [p.strip() for p in m["params"].split(",")]
    written = next(m[g] for g in ("bq", "dq", "sq", "col") if m[g] is not None)
    by_key = {_key(c): c for c in columns}
    col = by_key.get(_key(written), written.strip().upper())
    bad = [p for p in params if p not in parameters]
    if bad:
        raise CovariateSpecError(
            f"covariate {expr!r}: {', '.join(bad)} not among the estimated parameters "
            f"({', '.join(parameters)})"
        )
    if col not in columns:
        hint = ""
        if m["form"] and m["form"].lower() not in COVARIATE_FORMS:
            hint = (
                "; a column name with spaces or parentheses must be quoted, e.g. "
                "cl~`Body weight (kg)` power"
            )
        raise CovariateSpecError(
            f"covariate {expr!r}: the data have no column {col} "
            f"(covariates: {', '.join(columns) or 'none'}){hint}"
        )
    values = np.asarray(columns[col], dtype=float)
    binary = bool(np.all(np.isin(values, (0.0, 1.0))))
    form = (m["form"] or ("categorical" if binary else "power")).lower()
    if form not in COVARIATE_FORMS:
        raise CovariateSpecError(
            f"covariate {expr!r}: form {m['form']!r}; expected one of {', '.join(COVARIATE_FORMS)}"
        )
    ref = fixed = prior = None
    for opt in _split_options(m["opts"] or ""):
        key, eq, val = opt.partition("=")
        key, val = key.strip().lower(), val.strip()
        if not eq:
            raise CovariateSpecError(f"covariate {expr!r}: option {opt!r} is not key=value")
        if key in ("ref", "reference"):
            ref = _number(val, "ref", expr)
        elif key == "fixed":
            fixed = _number(val, "fixed", expr)
        elif key == "prior":
            pm = _PRIOR.match(val)
            if not pm:
                raise CovariateSpecError(
                    f"covariate {expr!r}: prior {val!r}; expected normal(mean, sd) or "
                    "lognormal(median, sd_log)"
                )
            fam = pm[1].lower()
            a, b = _number(pm[2], "prior", expr), _number(pm[3], "prior", expr)
            if b <= 0 or (fam == "lognormal" and a <= 0):
                raise CovariateSpecError(f"covariate {expr!r}: prior {val!r} needs positive scale")
            prior = (
                Dist("normal", {"mean": a, "sd": b})
                if fam == "normal"
                else Dist("lognormal", {"median": a, "sd_log": b})
            )
        else:
            raise CovariateSpecError(
                f"covariate {expr!r}: unknown option {key!r}; expected ref, fixed or prior"
            )
    if fixed is not None and prior is not None:
        raise CovariateSpecError(f"covariate {expr!r}: give either fixed= or prior=, not both")
    if form == "categorical":
        if not binary:
            raise CovariateSpecError(
                f"covariate {expr!r}: a categorical effect needs a 0/1 column; {col} has "
                f"values {sorted(set(values.tolist()))[:6]}"
            )
        if ref is not None:
            raise CovariateSpecError(f"covariate {expr!r}: a categorical effect takes no ref")
        if fixed is not None and fixed <= 0:
            raise CovariateSpecError(f"covariate {expr!r}: a categorical multiplier must be > 0")
        if prior is not None and prior.family != "lognormal":
            raise CovariateSpecError(
                f"covariate {expr!r}: a categorical multiplier needs a lognormal prior"
            )
        default = Dist("lognormal", {"median": 1.0, "sd_log": 0.5})
    else:
        if form == "power" and np.any(values <= 0):
            raise CovariateSpecError(
                f"covariate {expr!r}: {col} has values <= 0; a power model needs > 0 "
                "(choose linear or exponential)"
            )
        if ref is None:
            ref = float(np.median(values))
        if form == "power" and ref <= 0:
            raise CovariateSpecError(f"covariate {expr!r}: a power model needs ref > 0")
        if prior is not None and prior.family != "normal":
            raise CovariateSpecError(f"covariate {expr!r}: a {form} effect needs a normal prior")
        if form == "power":
            default = Dist("normal", {"mean": 0.0, "sd": 1.0})
        else:
            sd = float(np.std(values))
            default = Dist("normal", {"mean": 0.0, "sd": 0.5 / sd if sd > 0 else 1.0})
    dist = Dist("fixed", {"value": fixed}) if fixed is not None else (prior or default)
    safe = safe_names(columns)[col]
    return [
        CovariateEffect(
            name=f"{p}_{safe.lower()}",
            parameter=p,
            covariate=col,
            form=form,
            prior=dist,
            reference=ref,
            source=f"chosen at fit time: {expr.strip()}",
            assumption=True,
        )
        for p in params
    ]


def describe(eff: CovariateEffect) -> dict:
    """A JSON-ready description of an effect (stored in a fit's attributes)."""
    return {
        "name": eff.name,
        "parameter": eff.parameter,
        "covariate": eff.covariate,
        "form": eff.form,
        "reference": eff.reference,
        "prior": {"family": eff.prior.family, **dict(eff.prior.params)},
        "source": eff.source,
    }


def from_description(d: Mapping) -> CovariateEffect:
    """Inverse of :func:`describe`."""
    prior = dict(d["prior"])
    fam = prior.pop("family")
    return CovariateEffect(
        name=d["name"],
        parameter=d["parameter"],
        covariate=d["covariate"],
        form=d["form"],
        prior=Dist(fam, prior),
        reference=d["reference"],
        source=d.get("source", ""),
    )
