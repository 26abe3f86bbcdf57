"""pkpd: population PK/PD modelling in JAX and NumPyro.

Canonical units: time h, amounts mg, volumes L, clearances L/h, concentrations ng/mL.

The public names below are imported when first used, so ``import pkpd`` (and ``pkpd --help``,
``pkpd validate``) does not start JAX. Importing pkpd turns on JAX's float64 for the process
(:mod:`pkpd._xla`: models need it; a user who turns it off gets a clear error from pkpd).
"""

from __future__ import annotations

import importlib
import sys
import types

from pkpd import _xla

# Before anything imports JAX or starts its backend (see pkpd/_xla.py).
_xla.apply_cpu_defaults()
_xla.enable_x64()

__version__ = "0.1.0"

#: Public name -> the module it comes from.
_PUBLIC = {
    "Dataset": "pkpd.data",
    "DatasetError": "pkpd.data",
    "read_dataset": "pkpd.data",
    "read_aggregate": "pkpd.data.aggregate",
    "FitError": "pkpd.inference.fit",
    "fit": "pkpd.inference.fit",
    "load_fit": "pkpd.inference.fit",
    "save_fit": "pkpd.inference.fit",
    "Priors": "pkpd.inference.priors",
    "PriorsError": "pkpd.inference.priors",
    "load_priors": "pkpd.inference.priors",
    "load_model": "pkpd.models",
    "Regimen": "pkpd.regimen",
    "RegimenError": "pkpd.regimen",
    "report": "pkpd.report",
    "SBCError": "pkpd.inference.sbc",
    "load_sbc": "pkpd.inference.sbc",
    "prior_predictive": "pkpd.inference.sbc",
    "sbc": "pkpd.inference.sbc",
    "attainment": "pkpd.simulate",
    "load_simulation": "pkpd.simulate",
    "save_simulation": "pkpd.simulate",
    "simulate": "pkpd.simulate",
}
#: Subpackages that share their name with the function they export: ``pkpd.simulate`` and
#: ``pkpd.report`` are the functions (``import pkpd.simulate.core`` still works).
_FUNCTION_NAMES = ("simulate", "report")


#: Subpackages and modules reachable as attributes (``pkpd.models.Model``, ...).
_MODULES = ("data", "datasets", "diagnostics", "inference", "models", "ode", "pd", "pk", "regimen")


def __getattr__(name: str):
    if name in _MODULES:
        return importlib.import_module(f"pkpd.{name}")
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pkpd' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC) | set(_MODULES))


class _Package(types.ModuleType):
    """Python sets ``pkpd.simulate`` to the subpackage when it is first imported; keep the
    function of that name there instead."""

    def __setattr__(self, name, value):
        if name in _FUNCTION_NAMES and isinstance(value, types.ModuleType):
            value = getattr(value, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = ["__version__", "datasets", *_PUBLIC]
