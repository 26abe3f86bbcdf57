"""pkpd: population PK/PD modelling in JAX and NumPyro.

Canonical units: time h, amounts mg, volumes L, clearances L/h, concentrations ng/mL.
"""

import jax

from pkpd._xla import apply_cpu_defaults

apply_cpu_defaults()  # before anything starts JAX's backend (see pkpd/_xla.py)

# Pharmacometric models need float64 (concentrations span many decades; NONMEM parity is
# checked to 1e-4 relative). Set before any array is created.
jax.config.update("jax_enable_x64", True)

from pkpd import datasets  # noqa: E402
from pkpd.data import Dataset, DatasetError, read_dataset  # noqa: E402
from pkpd.inference.fit import FitError, fit, load_fit, save_fit  # noqa: E402
from pkpd.inference.priors import Priors, PriorsError, load_priors  # noqa: E402
from pkpd.models import load_model  # noqa: E402
from pkpd.regimen import Regimen, RegimenError  # noqa: E402
from pkpd.report import report  # noqa: E402
from pkpd.simulate import attainment, load_simulation, save_simulation, simulate  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "DatasetError",
    "FitError",
    "datasets",
    "fit",
    "load_fit",
    "load_model",
    "save_fit",
    "Priors",
    "PriorsError",
    "Regimen",
    "RegimenError",
    "__version__",
    "load_priors",
    "read_dataset",
    "report",
    "attainment",
    "load_simulation",
    "save_simulation",
    "simulate",
]
