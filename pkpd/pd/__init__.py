"""Pharmacodynamic building blocks: direct models and concentration-driven turnover models.

* :mod:`pkpd.pd.direct` — Emax, sigmoid Emax, inhibitory Imax (closed forms).
* :mod:`pkpd.pd.turnover` — indirect response I–IV, bounded turnover for percentages, effect
  compartment, as vector fields solved by :func:`pkpd.ode.solve`.
"""

from pkpd.pd.direct import emax, hill_fraction, inhibitory, remaining_fraction, sigmoid_emax
from pkpd.pd.turnover import (
    bounded_turnover,
    bounded_turnover_field,
    effect_compartment,
    effect_compartment_field,
    indirect_response,
    indirect_response_field,
    irm_baseline,
)

__all__ = [
    "bounded_turnover",
    "bounded_turnover_field",
    "effect_compartment",
    "effect_compartment_field",
    "emax",
    "hill_fraction",
    "indirect_response",
    "indirect_response_field",
    "inhibitory",
    "irm_baseline",
    "remaining_fraction",
    "sigmoid_emax",
]
