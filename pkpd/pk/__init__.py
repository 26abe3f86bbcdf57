"""PK engines: analytic linear mammillary models (:mod:`pkpd.pk.analytic`)."""

from pkpd.pk.analytic import (
    Disposition,
    DoseTerms,
    StateResponse,
    disposition,
    dose_terms,
    pole_response,
    state_response,
    superpose,
)

__all__ = [
    "Disposition",
    "DoseTerms",
    "StateResponse",
    "disposition",
    "dose_terms",
    "pole_response",
    "state_response",
    "superpose",
]
