"""netCDF-safe names for anything named by the data (column names, effect names).

A dataset's columns may be named anything the reader accepts: ``CRCL_mL/min``, ``Poids kg``,
``体重``, ``<b>WT</b>``. netCDF (HDF5) cannot name a variable with ``/``, and other tools that
read the files (R's ncdf4, NCO) are stricter still. Every name derived from the data is
therefore written under a *safe name*: ASCII letters, digits and ``_`` only, with the original
kept next to it (the variable's ``original_name`` attribute, and for a fit the ``data_columns``
attribute, a JSON list of ``[original, variable]`` pairs). Readers
(:func:`pkpd.inference.posterior.restore_dataset`, :func:`pkpd.load_simulation`) give the
original names back.

The scheme (:func:`safe_names`), deterministic for a given set of names:

- a name already made of ASCII letters, digits and ``_`` is kept as it is;
- otherwise accents are dropped (``É`` → ``E``), any other non-ASCII character becomes
  ``u<hex code point>`` (``体`` → ``u4f53``), every run of other characters (``/``, spaces,
  ``<>``) becomes one ``_``, and leading and trailing ``_`` are stripped
  (``CRCL_ML/MIN`` → ``CRCL_ML_MIN``, ``<B>WT</B>`` → ``B_WT_B``);
- a safe name already taken (compared ignoring case, since effect names are lower-cased) gets
  ``_2``, ``_3``, ... (names needing a change are assigned in sorted order, after the names
  kept as they are).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping

#: Attribute holding the original (data) name of a variable stored under a safe name.
ORIGINAL_NAME = "original_name"
#: Dataset attribute (JSON ``{safe: original}``) listing the variables and dimensions renamed
#: by :func:`to_netcdf_names`.
RENAMED_ATTR = "pkpd_renamed"

_COMPONENT = re.compile(r"[A-Za-z0-9_]+\Z")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def is_safe(name: str) -> bool:
    """Whether ``name`` is a netCDF-safe variable name (ASCII letter or ``_``, then letters,
    digits, ``_``)."""
    return bool(_VARIABLE.match(str(name)))


def sanitize(name: str) -> str:
    """The safe form of one name, before collisions are resolved (see the module docstring).

    Returns a non-empty string of ASCII letters, digits and ``_`` (it may start with a digit:
    callers add a prefix such as ``record_`` or ``beta_cl_``).
    """
    out = []
    for ch in unicodedata.normalize("NFKD", str(name)):
        if ch.isascii():
            out.append(ch if (ch.isalnum() or ch == "_") else "_")
        elif unicodedata.combining(ch):
            continue  # accents: É -> E
        else:
            out.append(f"_u{ord(ch):04x}_")
    text = re.sub(r"_+", "_", "".join(out)).strip("_")
    return text or "unnamed"


def safe_names(names: Iterable[str]) -> dict[str, str]:
    """``{name: safe name}`` for every name, distinct ignoring case, deterministic.

    Parameters
    ----------
    names : iterable of str
        Names as the data give them (duplicates are mapped once).

    Returns
    -------
    dict
        In the order of ``names``. Names of ASCII letters, digits and ``_`` map to themselves
        (unless they differ from an earlier one only by case); the others to
        :func:`sanitize`'s form, with ``_2``, ``_3``, ... where that is taken.

    Examples
    --------
    >>> safe_names(["WT", "CRCL_ML/MIN", "CRCL_ML_MIN", "体重"])
    {'WT': 'WT', 'CRCL_ML/MIN': 'CRCL_ML_MIN_2', 'CRCL_ML_MIN': 'CRCL_ML_MIN', '体重': 'u4f53_u91cd'}
    """
    names = list(dict.fromkeys(str(n) for n in names))
    out: dict[str, str] = {}
    taken: set[str] = set()
    for n in names:
        if _COMPONENT.match(n) and n.lower() not in taken:
            out[n] = n
            taken.add(n.lower())
    for n in sorted(n for n in names if n not in out):
        base = sanitize(n)
        cand, k = base, 2
        while cand.lower() in taken:
            cand, k = f"{base}_{k}", k + 1
        out[n] = cand
        taken.add(cand.lower())
    return {n: out[n] for n in names}


def to_netcdf_names(ds, *, prefixes: Iterable[str] = ()):
    """A shallow copy of an :class:`xarray.Dataset` whose variable and dimension names are all
    netCDF-safe; a no-op copy when they already are.

    Parameters
    ----------
    ds : xarray.Dataset
    prefixes : iterable of str
        Prefixes of variables named after a data column (``"cov_"``): the column part is
        made safe and the column name goes to the variable's ``original_name`` attribute.
        Any other unsafe name is made safe whole, its original in ``original_name``.

    Returns
    -------
    xarray.Dataset
        With the attribute ``pkpd_renamed`` (JSON ``{safe: original}``) when anything was
        renamed; :func:`from_netcdf_names` undoes it.
    """
    prefixes = tuple(prefixes)
    names = [str(n) for n in (*ds.variables, *ds.dims)]
    bad = [n for n in dict.fromkeys(names) if not is_safe(n)]
    if not bad:
        return ds.copy()
    taken = {n.lower() for n in names if is_safe(n)}
    mapping: dict[str, str] = {}
    column: dict[str, str] = {}
    for n in sorted(bad):
        pre = next((p for p in prefixes if n.startswith(p)), "")
        base = pre + sanitize(n[len(pre) :])
        if not is_safe(base):
            base = "v_" + base
        cand, k = base, 2
        while cand.lower() in taken:
            cand, k = f"{base}_{k}", k + 1
        taken.add(cand.lower())
        mapping[n] = cand
        column[n] = n[len(pre) :] if pre else n
    out = ds.copy()
    for n in bad:
        if n in out.variables:
            out[n].attrs[ORIGINAL_NAME] = column[n]
    out = out.rename({n: mapping[n] for n in bad})
    out.attrs[RENAMED_ATTR] = json.dumps({mapping[n]: n for n in bad}, ensure_ascii=False)
    return out


def from_netcdf_names(ds):
    """Undo :func:`to_netcdf_names`: the original variable and dimension names (in place of
    ``ds``'s, on a shallow copy)."""
    raw = ds.attrs.get(RENAMED_ATTR)
    if not raw:
        return ds
    mapping: Mapping[str, str] = json.loads(raw)
    present = {k: v for k, v in mapping.items() if k in ds.variables or k in ds.dims}
    out = ds.rename(present)
    for original in present.values():
        if original in out.variables:
            out[original].attrs.pop(ORIGINAL_NAME, None)
    out.attrs = {k: v for k, v in out.attrs.items() if k != RENAMED_ATTR}
    return out
