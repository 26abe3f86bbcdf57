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
    from pkpd._xla import require_x64

    require_x64("pkpd predict")
    eps_model = list(model.endpoint_units)
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
    if not model.dose_compartment_names:
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


#: Columns read as body weight (kg) by :func:`concentration_scale_warning`, upper case.
WEIGHT_COLUMNS = ("WT", "WEIGHT", "BW", "BWT", "WGT", "BODYWEIGHT")
#: The data-implied volume may be this many times the priors' typical volume (or its inverse)
#: before :func:`concentration_scale_warning` warns.
VOLUME_RATIO_LIMIT = 100.0
#: Data-implied volumes per kg of body weight outside this range (L/kg) are warned about.
VOLUME_PER_KG_RANGE = (0.005, 300.0)
#: Suggestion per power of 1000 between the data and ng/mL.
_UNIT_NAMES = {1: "mg/L (= µg/mL)", 2: "g/L (= mg/mL)", -1: "pg/mL (= ng/L)", -2: "fg/mL"}


def _num(x: float) -> str:
    """``1,234`` for large numbers, 3 significant digits otherwise."""
    return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"


def _central_volume(model) -> tuple[str | None, str | None]:
    """The drug-concentration endpoint and the volume parameter that scales it
    (:attr:`pkpd.models.Model.concentration_volumes`; the first one)."""
    for ep, v in model.concentration_volumes.items():
        if ep in model.endpoint_units and v in model.parameters:
            return ep, v
    return None, None


def data_implied_volumes(ds, endpoint: str, unit: str = "ng/mL") -> dict[str, float]:
    """Per subject, ``dose / highest concentration`` in L: the largest single dose (mg) given
    before an observation over that observation of ``endpoint`` (in ``unit``), smallest over
    the subject's observations. For a one-compartment bolus that is about V (the volume at
    C0); absorption, sampling after the peak and F < 1 make it larger, accumulation smaller.
    Observations that are censored, not positive or before any dose are not used."""
    from pkpd.data.reader import unit_factor

    scale = unit_factor("mg/L", unit)
    r = ds.records
    ids = r["ID"].to_numpy()
    dose = (r["EVID"].isin((1, 4)) & (r["AMT"] > 0)).to_numpy()
    amt = r["AMT"].to_numpy(dtype=float)
    dv = r["DV"].to_numpy(dtype=float)
    obs = (
        (r["EVID"] == 0) & (r["MDV"] == 0) & ~r["BLQ"] & (r["ENDPOINT"] == endpoint) & (r["DV"] > 0)
    ).to_numpy()
    out: dict[str, float] = {}
    current, dmax = None, 0.0
    for i in range(len(r)):
        if ids[i] != current:
            current, dmax = ids[i], 0.0
        if dose[i]:
            dmax = max(dmax, amt[i])
        elif obs[i] and dmax > 0:
            v = scale * dmax / dv[i]
            out[current] = min(out.get(current, math.inf), v)
    return out


def concentration_scale_warning(model, ds, typical: Mapping[str, float] | None = None):
    """A message when the observations look like they are in another unit than the model's.

    The check is cheap and runs before a fit: for each subject, the largest dose (mg) over the
    highest concentration after it (:func:`data_implied_volumes`) is a volume (L) when the data
    are in the model's unit (ng/mL: ``1000 · dose / C``). Its median over subjects is compared
    with the priors' typical central volume (``typical["v"]`` or ``typical["v1"]``): outside
    1/:data:`VOLUME_RATIO_LIMIT` to :data:`VOLUME_RATIO_LIMIT` times it (100×, while mg/L data
    read as ng/mL are 1000× off) gives a warning; so does, when the data have a body-weight
    column (:data:`WEIGHT_COLUMNS`, kg), a median volume per kg outside
    :data:`VOLUME_PER_KG_RANGE` (0.005-300 L/kg; mg/L data of a drug with V ≈ 1 L/kg read as
    ng/mL give about 1000 L/kg). The message names the likely unit.

    Parameters
    ----------
    model : model object
        A model with a drug concentration endpoint (``conc`` or ``temsirolimus``) and a central
        volume parameter (``v`` or ``v1``); other models are not checked.
    ds : pkpd.Dataset
    typical : mapping of str to float, optional
        Typical parameter values (``Priors.typical()``).

    Returns
    -------
    str or None
    """
    from pkpd.data.reader import unit_factor

    ep, vname = _central_volume(model)
    if ep is None:
        return None
    unit = model.endpoint_units[ep]
    try:
        unit_factor("mg/L", unit)
    except ValueError:
        return None
    vols = data_implied_volumes(ds, ep, unit)
    if not vols:
        return None
    v_data = float(np.median(list(vols.values())))
    ratios = []  # (how far off, as a factor; text)
    v_typ = None if typical is None else typical.get(vname)
    if v_typ is not None and v_typ > 0:
        q = v_data / v_typ
        if not (1 / VOLUME_RATIO_LIMIT <= q <= VOLUME_RATIO_LIMIT):
            ratios.append((q, f"{_num(q)}× the priors' typical {vname} ({_num(v_typ)} L)"))
    cols = {c.upper(): c for c in ds.covariates}
    wt_col = next((cols[c] for c in WEIGHT_COLUMNS if c in cols), None)
    if wt_col is not None:
        wt = ds.records.groupby("ID", sort=False)[wt_col].first()
        per_kg = [v / float(wt[s]) for s, v in vols.items() if float(wt[s]) > 0]
        if per_kg:
            v_kg = float(np.median(per_kg))
            lo, hi = VOLUME_PER_KG_RANGE
            if not (lo <= v_kg <= hi):
                ratios.append((v_kg, f"{_num(v_kg)} L per kg of body weight ({wt_col})"))
    if not ratios:
        return None
    # how far off: per kg (vs about 1 L/kg) where the data have weights, which holds for
    # children and adults alike; else vs the priors' typical volume
    off = ratios[-1][0]
    k = int(round(math.log10(off) / 3)) if off > 0 else 0
    k = k or (1 if off > 1 else -1)
    likely = _UNIT_NAMES.get(k, f"a unit 1000^{k} times {unit}") if unit == "ng/mL" else None
    guess = (
        f"data in {likely} read as {unit} look like this"
        if likely
        else f"the data look about {10 ** (3 * k):g} times off"
    )
    fix = (
        f"if DV is in {likely.split(' ')[0]}, add a DVU column or --dv-unit {ep}="
        f"{likely.split(' ')[0]} (read_dataset(..., dv_units={{'{ep}': "
        f"'{likely.split(' ')[0]}'}}))"
        if likely
        else f"give the unit of DV in a DVU column or --dv-unit {ep}=UNIT"
    )
    return (
        f"the observations of {ep} look like they are not in {unit}, the unit of model "
        f"{model.name}: the largest dose over the highest concentration after it implies a "
        f"volume of {_num(v_data)} L (median of {len(vols)} subject{'s' if len(vols) > 1 else ''}"
        f"), {' and '.join(t for _, t in ratios)}; {guess}. {fix[0].upper() + fix[1:]}; "
        "also check that AMT is in mg"
    )


def warn_concentration_scale(model, ds, typical=None, *, stacklevel: int = 2) -> str | None:
    """:func:`concentration_scale_warning`, emitted with ``warnings.warn`` as a
    :class:`pkpd.data.DataUnitWarning`; returns the message (None: nothing to warn)."""
    import warnings

    from pkpd.data.reader import DataUnitWarning

    message = concentration_scale_warning(model, ds, typical)
    if message:
        warnings.warn(message, DataUnitWarning, stacklevel=stacklevel + 1)
    return message
