r"""Direct PD models: Emax, sigmoid Emax (Hill), inhibitory Imax.

All functions are elementwise in the concentration ``c`` and broadcast over their parameters.
Concentrations and potencies (``ec50``, ``ic50``) share one unit, whichever the caller uses
(ng/mL for drug concentrations in pkpd, nM for molar active-moiety drivers); effects carry the
unit of ``e0``/``emax``. Fractions (:func:`inhibitory`) are dimensionless.

The Hill term :math:`c^h/(c_{50}^h + c^h)` is evaluated as
:math:`\sigma(h(\ln c - \ln c_{50}))` (logistic sigmoid): it never overflows for large ``c`` or
``h`` (huge doses, steep curves), it is exactly 0 at ``c <= 0``, and its complement is computed
without cancellation (:func:`remaining_fraction`). Gradients are finite everywhere, including at
``c = 0`` (where the derivative in ``c`` is reported as 0).

References: Holford NHG, Sheiner LB. Understanding the dose-effect relationship. Clin
Pharmacokinet 1981;6:429-453 (Emax and sigmoid Emax).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["hill_fraction", "emax", "sigmoid_emax", "inhibitory", "remaining_fraction"]


def _log_ratio(c, c50):
    c = jnp.asarray(c)
    pos = c > 0
    safe = jnp.where(pos, c, 1.0)
    return pos, jnp.log(safe) - jnp.log(c50)


def hill_fraction(c, c50, hill=1.0):
    r"""Fractional occupancy :math:`f(c) = c^h / (c_{50}^h + c^h)` in [0, 1].

    Parameters
    ----------
    c : concentration (unit of ``c50``), >= 0; values <= 0 give 0.
    c50 : concentration giving half the maximum (> 0).
    hill : Hill coefficient h (> 0), dimensionless.
    """
    pos, lr = _log_ratio(c, c50)
    return jnp.where(pos, jax.nn.sigmoid(hill * lr), 0.0)


def emax(c, e0, emax, ec50):
    r"""Emax model :math:`E(c) = E_0 + E_{max}\,c/(EC_{50} + c)`.

    Parameters
    ----------
    c : concentration (unit of ``ec50``, e.g. ng/mL), >= 0.
    e0 : baseline effect (effect unit).
    emax : maximal change from baseline (effect unit; negative for a decrease).
    ec50 : concentration giving half of ``emax`` (> 0).

    Examples
    --------
    >>> import pkpd
    >>> from pkpd.pd import emax
    >>> float(emax(2.0, e0=10.0, emax=50.0, ec50=2.0))
    35.0
    """
    return e0 + emax * hill_fraction(c, ec50, 1.0)


def sigmoid_emax(c, e0, emax, ec50, hill):
    r"""Sigmoid Emax (Hill) model :math:`E(c) = E_0 + E_{max}\,c^h/(EC_{50}^h + c^h)`.

    Parameters as :func:`emax`, plus ``hill`` (h > 0, dimensionless; h = 1 is :func:`emax`).
    """
    return e0 + emax * hill_fraction(c, ec50, hill)


def inhibitory(c, imax, ic50, hill=1.0):
    r"""Fractional inhibition :math:`I(c) = I_{max}\,c^h/(IC_{50}^h + c^h)` in [0, ``imax``].

    Parameters
    ----------
    c : concentration (unit of ``ic50``), >= 0.
    imax : maximal inhibition, 0 <= imax <= 1 (dimensionless).
    ic50 : concentration giving half of ``imax`` (> 0).
    hill : Hill coefficient (> 0).

    Use :func:`remaining_fraction` for :math:`1 - I(c)` (no cancellation when I → 1).
    """
    return imax * hill_fraction(c, ic50, hill)


def remaining_fraction(c, imax, ic50, hill=1.0):
    r""":math:`1 - I(c) = (1 - I_{max}) + I_{max}\,IC_{50}^h/(IC_{50}^h + c^h)`, accurately.

    Exact to rounding even when :math:`I(c)` is within 1e-16 of 1 (``imax = 1``, huge ``c``),
    where ``1 - inhibitory(...)`` would round to 0; exactly 1 at ``c <= 0``.
    """
    pos, lr = _log_ratio(c, ic50)
    occupied = jnp.where(pos, jax.nn.sigmoid(hill * lr), 0.0)
    free = jnp.where(pos, jax.nn.sigmoid(-hill * lr), 1.0)
    # Below half occupancy 1 - imax*f has no cancellation and is exactly 1 without drug (so
    # turnover models sit exactly at baseline); above it, (1 - imax) + imax*(1 - f) keeps the
    # relative precision of a tiny remainder.
    return jnp.where(occupied < 0.5, 1.0 - imax * occupied, (1.0 - imax) + imax * free)
