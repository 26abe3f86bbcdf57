"""Closed-form references the tests compare pkpd's engines with (written from the textbook
formulas, independent of pkpd's code)."""

from __future__ import annotations

import numpy as np


def one_cmt_oral_conc(t, doses, ka, cl, v):
    """One-compartment first-order absorption (Bateman) concentration, ng/mL, at times ``t``
    (h) of mg doses ``[(time_h, amount_mg), ...]`` given into the depot; ``ka`` 1/h,
    ``cl`` L/h, ``v`` L."""
    t = np.asarray(t, dtype=float)
    k = cl / v
    out = np.zeros_like(t)
    for td, amt in doses:
        dt = np.clip(t - td, 0.0, None)
        out += 1000 * amt * ka / (v * (ka - k)) * (np.exp(-k * dt) - np.exp(-ka * dt))
    return out
