"""Saving and loading simulations (netCDF, written atomically) with CSV summaries."""

from __future__ import annotations

import json
from pathlib import Path

import xarray as xr

from pkpd._files import atomic_write, read_marked
from pkpd.inference.names import from_netcdf_names, to_netcdf_names
from pkpd.simulate.errors import SimulationError


def save_simulation(sim: xr.Dataset, path, *, targets=None, summary=True) -> dict[str, Path]:
    """Write a simulation to netCDF (atomically) and its CSV summaries next to it.

    Parameters
    ----------
    sim : xarray.Dataset
        A result of :func:`pkpd.simulate`.
    path : path
        The netCDF file, e.g. ``sim.nc``.
    targets : str or sequence of str, optional
        Targets for :func:`pkpd.simulate.attainment`; their table goes to
        ``<stem>_attainment.csv`` and the list to the file's ``targets`` attribute (JSON), where
        :func:`pkpd.report` finds them.
    summary : bool
        Write ``<stem>.csv``: every metric's median and 90% interval per regimen
        (:func:`pkpd.simulate.summarize`).

    Notes
    -----
    Names netCDF cannot store (a covariate column ``CRCL_ML/MIN`` gives the variable
    ``cov_CRCL_ML/MIN``) are written under safe names (``cov_CRCL_ML_MIN``, the column's name
    in its ``original_name`` attribute, the renaming in the file's ``pkpd_renamed``
    attribute); :func:`load_simulation` gives the original names back.

    Returns
    -------
    dict
        ``{"netcdf": path, "summary": path, "attainment": path}`` for the files written.
    """
    from pkpd.simulate.core import MARKER
    from pkpd.simulate.targets import attainment, summarize

    if not isinstance(sim, xr.Dataset) or not int(sim.attrs.get(MARKER, 0)):
        raise SimulationError("save_simulation needs the xarray.Dataset from pkpd.simulate")
    path = Path(path)
    targets = [targets] if isinstance(targets, str) else list(targets or [])
    # shallow copy with netCDF-safe names: cov_<column> of a column named e.g. CRCL_ML/MIN is
    # written as cov_CRCL_ML_MIN with original_name "CRCL_ML/MIN"; load_simulation renames back
    to_write = to_netcdf_names(sim, prefixes=("cov_", "param_"))
    if targets:
        to_write.attrs["targets"] = json.dumps(targets)
    atomic_write(path, lambda tmp: to_write.to_netcdf(tmp))
    out = {"netcdf": path}
    if summary:
        p = path.with_suffix(".csv")
        atomic_write(p, lambda tmp: summarize(sim).to_csv(tmp, index=False))
        out["summary"] = p
    if targets:
        p = path.with_name(path.stem + "_attainment.csv")
        table = attainment(sim, targets)
        atomic_write(p, lambda tmp: table.to_csv(tmp, index=False))
        out["attainment"] = p
    return out


def load_simulation(path) -> xr.Dataset:
    """Read a simulation written by :func:`save_simulation` (fully into memory).

    Variables stored under netCDF-safe names get their original names back (``cov_<column>``
    as :func:`pkpd.simulate` names them; see :func:`save_simulation`).
    """
    from pkpd.simulate.core import MARKER

    sim = read_marked(
        path,
        xr.load_dataset,
        marker=MARKER,
        what="simulation",
        writer="`pkpd simulate` or pkpd.save_simulation",
        error=SimulationError,
    )
    return from_netcdf_names(sim)
