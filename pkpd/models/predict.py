"""Predictions on every record of a dataset with fixed parameters (``pkpd predict``).

A parameter is a number or the name of a data column, read per record the way NONMEM's
``$PK`` reads a data item: a dose modifier (``lag_<cmt>``, ``f_<cmt>``, ``dur_<cmt>``,
``rate_<cmt>``) takes the value on each dose's own record (ADDL doses: their record's), and a
structural parameter (``cl``, ``v``, ..., ``ka``) takes the subject's value, which must then be
the same on all of that subject's records (the analytic engine has no time-varying disposition).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from pkpd.data.arrays import unpad_points
from pkpd.pk import analytic


def parse_params(spec: str) -> dict[str, float | str]:
    """Parse ``"cl=1.1,v=20,lag_central=LAGT"`` into ``{"cl": 1.1, ..., "lag_central": "LAGT"}``.

    Raises
    ------
    ValueError
        On an item without ``=``, an empty name or value, a repeated name, or a non-finite number.
    """
    out: dict[str, float | str] = {}
    problems = []
    for item in [s.strip() for s in spec.split(",") if s.strip()]:
        name, eq, value = (x.strip() for x in item.partition("="))
        if not eq or not name or not value:
            problems.append(f"{item!r} is not NAME=VALUE (VALUE a number or a data column)")
            continue
        if name in out:
            problems.append(f"parameter {name!r} given twice")
            continue
        try:
            number = float(value)
        except ValueError:
            out[name] = value
            continue
        if not math.isfinite(number):
            problems.append(f"parameter {name!r} = {value!r} is not a finite number")
            continue
        out[name] = number
    if not out and not problems:
        problems.append("no parameters given; expected e.g. 'cl=1.1,v=20,ka=1.5'")
    if problems:
        raise ValueError("bad --params: " + "; ".join(problems))
    return out


def predict_dataset(
    ds, model, params: Mapping[str, float | str], *, allow_f_above_1: bool = False
) -> np.ndarray:
    """The model's prediction on every record of ``ds``, in record order.

    Each observation record gets its own endpoint's prediction (``conc`` for the generic
    models); dose records get the model's first endpoint.

    Parameters
    ----------
    ds : pkpd.Dataset
    model : pkpd.models.LinearPKModel
    params : mapping of str to float or str
        Numbers, or names of data columns (case-insensitive), see the module docstring.
    allow_f_above_1 : bool
        Accept bioavailabilities ``f_<cmt>`` above 1 (a relative F). Always refused: volumes,
        clearances and rate constants <= 0, ``f_<cmt>`` < 0, ``lag_<cmt>`` < 0, ``dur_<cmt>``
        or ``rate_<cmt>`` <= 0, and non-finite values (see :func:`parameter_domain_problems`).

    Returns
    -------
    numpy.ndarray
        One value per record of ``ds.records``.

    Raises
    ------
    ValueError
        Unknown or missing parameters, unknown columns, a structural parameter whose column
        varies within a subject, doses into a compartment the model cannot dose, or RATE=-1/-2
        doses without the ``rate_<cmt>``/``dur_<cmt>`` parameter, or a parameter value outside
        its domain (named with the subject and value).
    """
    from pkpd.models import endpoint_units

    eps_model = list(endpoint_units(model))
    if hasattr(model, "with_endpoints"):
        wanted = [e for e in eps_model if e in ds.endpoints] or eps_model[:1]
        model = model.with_endpoints(wanted)
        eps_model = wanted
    model.check_parameters(params)
    padded = ds.to_arrays(prediction_rows="all")
    d = padded.data
    col_index = {c.upper(): i for i, c in enumerate(padded.covariates)}
    problems: list[str] = []
    batched: dict[str, jnp.ndarray] = {}
    S, D = d.dose_time.shape
    for name, value in params.items():
        structural = name in model.structural_parameters
        if isinstance(value, float | int):
            batched[name] = jnp.full((S,), float(value))
            continue
        k = col_index.get(str(value).upper())
        if k is None:
            problems.append(
                f"parameter {name!r} refers to column {value!r}, which the data do not have "
                f"(columns usable as parameters: {', '.join(padded.covariates) or 'none'})"
            )
            continue
        column = padded.covariates[k]
        if structural:
            varying = ds.records.groupby("ID", sort=False)[column].nunique(dropna=False)
            varying = varying[varying > 1]
            if len(varying):
                ids = ", ".join(str(i) for i in varying.index[:10])
                problems.append(
                    f"structural parameter {name!r} = column {column!r} changes within subject(s) "
                    f"{ids}; the analytic engine needs one value per subject"
                )
                continue
            batched[name] = jnp.asarray(d.cov[:, k])
        else:
            batched[name] = jnp.asarray(d.dose_cov[:, :, k])  # [S, D]: each dose's record
    problems += model.check_subject(d)
    problems += modelled_rate_problems(model, d, params)
    if not problems:
        problems += parameter_domain_problems(
            model, batched, params, d, padded.subject_ids, allow_f_above_1=allow_f_above_1
        )
    if problems:
        raise ValueError("; ".join(problems))

    def one(p, subject):
        out = model.predict(p, subject)
        return jnp.stack([out[e] for e in eps_model])  # [E, P]

    pred = np.asarray(jax.jit(jax.vmap(one))(batched, d))  # [S, E, P]
    # Each record gets the prediction of its own endpoint; dose and other records without one
    # get the model's first endpoint (the central concentration); endpoints the model does not
    # predict give NaN.
    to_model = np.array(
        [eps_model.index(e) if e in eps_model else -1 for e in padded.endpoints] + [0]
    )
    point_ep = np.asarray(d.point_endpoint)
    sel = to_model[np.where(point_ep >= 0, point_ep, len(padded.endpoints))]
    chosen = np.take_along_axis(pred, np.maximum(sel, 0)[:, None, :], axis=1)[:, 0, :]
    chosen = np.where(sel >= 0, chosen, np.nan)
    return unpad_points(padded, chosen, len(ds.records))


#: Units of parameters that must be > 0 (volumes, clearances, rate constants, rates).
_POSITIVE_UNITS = {"L", "L/h", "1/h", "mg/h"}


def _domain(name: str, unit: str | None, allow_f_above_1: bool):
    """``(lower, lower_inclusive, upper, text)`` of a parameter's allowed values, or None."""
    prefix = name.split("_", 1)[0]
    if prefix == "f" and "_" in name:
        return (0.0, True, None if allow_f_above_1 else 1.0,
                ">= 0" if allow_f_above_1 else "in [0, 1] (--allow-f-above-1 for a relative F)")  # fmt: skip
    if prefix == "lag" and "_" in name:
        return 0.0, True, None, ">= 0 h"
    if prefix in ("dur", "rate") and "_" in name:
        return 0.0, False, None, f"> 0 {unit or ''}".rstrip()
    if unit in _POSITIVE_UNITS:
        return 0.0, False, None, f"> 0 {unit}"
    return None


def parameter_domain_problems(
    model, batched, params, d, subject_ids, *, allow_f_above_1: bool = False
) -> list[str]:
    """Parameter values outside their domain, each named with its subjects and values.

    Volumes, clearances, rate constants (units L, L/h, 1/h) and modelled rates/durations must
    be > 0, lag times >= 0, bioavailabilities in [0, 1] (>= 0 with ``allow_f_above_1``), and
    every value finite. Dose modifiers are checked on the dose records that use them.
    """
    units = dict(model.parameters)
    ids = np.asarray(subject_ids)
    out = []
    for name, value in batched.items():
        dom = _domain(name, units.get(name), allow_f_above_1)
        v = np.asarray(value, dtype=float)
        if v.ndim == 2:
            # a dose modifier acts on the doses into its compartment (dur_/rate_: only those
            # whose RATE says the duration or rate is modelled)
            prefix, _, compartment = name.partition("_")
            cmt = np.asarray(d.dose_cmt)
            cmt = np.where(cmt == 0, model.default_dose_compartment, cmt)
            number = {n: c for c, n in model.compartments.items()}.get(compartment)
            rate = np.asarray(d.dose_rate)
            mask = np.asarray(analytic.host_active_doses(d)) & (cmt == number)
            if prefix == "dur":
                mask &= rate == -2
            elif prefix == "rate":
                mask &= rate == -1
        else:
            mask = np.ones(v.shape, bool)
        ok = np.isfinite(v)
        if dom is not None:
            lo, inclusive, hi, text = dom
            ok &= (v >= lo) if inclusive else (v > lo)
            if hi is not None:
                ok &= v <= hi
        else:
            text = "finite"
        bad = mask & ~ok
        if not bad.any():
            continue
        subj = np.nonzero(bad.any(axis=1) if bad.ndim == 2 else bad)[0]
        values = v[bad]
        source = params.get(name)
        where = "" if isinstance(source, float | int) else f" (column {source!r})"
        shown = ", ".join(f"{x:g}" for x in np.unique(values)[:5])
        who = ", ".join(str(ids[i]) for i in subj[:10]) + (" ..." if len(subj) > 10 else "")
        out.append(f"parameter {name}{where} = {shown} for subject(s) {who}; expected {text}")
    return out


def modelled_rate_problems(model, d, params) -> list[str]:
    """RATE=-1 needs ``rate_<cmt>`` and RATE=-2 ``dur_<cmt>`` for the dose's compartment."""
    if not hasattr(model, "dose_compartment_names"):
        return []
    cmt = np.asarray(d.dose_cmt)
    cmt = np.where(cmt == 0, model.default_dose_compartment, cmt)
    is_dose = analytic.host_active_doses(d)
    rate = np.asarray(d.dose_rate)
    out = []
    for code, prefix in ((-1, "rate"), (-2, "dur")):
        for number in sorted(set(cmt[is_dose & (rate == code)].tolist())):
            cname = model.compartments.get(number)
            if cname in model.dose_compartment_names and f"{prefix}_{cname}" not in params:
                out.append(
                    f"doses with RATE={code} into compartment {number} ({cname}) need the "
                    f"parameter {prefix}_{cname}"
                )
    return out
