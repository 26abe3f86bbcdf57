r"""Algebra of polyexponential unit responses: scaling, sums and convolutions.

A linear chain (parent → metabolite, concentration → effect compartment) keeps every unit-dose
response a sum of exponentials, so the analytic event engine (:func:`pkpd.pk.analytic.superpose`)
serves it unchanged. With :math:`f(u) = \sum_i a_i e^{-\alpha_i u}` and
:math:`g(u) = \sum_j b_j e^{-\beta_j u}`,

.. math::
    (f * g)(u) = \int_0^u f(s)\,g(u-s)\,ds
               = \sum_{i,j} a_i b_j \frac{e^{-\beta_j u} - e^{-\alpha_i u}}{\alpha_i - \beta_j},

a polyexponential on the poles :math:`\{\alpha_i\} \cup \{\beta_j\}` (see :func:`convolve` for
coincident poles). A pair whose coefficient product is zero contributes zero.
"""

from __future__ import annotations

import jax.numpy as jnp

from pkpd.pk import analytic
from pkpd.pk.analytic import StateResponse

#: Relative closeness at which two poles are treated as coincident.
CONFLUENT_RTOL = 1e-8


def scale(resp: StateResponse, factor) -> StateResponse:
    """``factor`` times a response (e.g. amount mg → concentration)."""
    return StateResponse(poles=resp.poles, coef=resp.coef * factor)


def add(*terms: StateResponse) -> StateResponse:
    """Sum of responses: poles and coefficients concatenated along the pole axis."""
    return StateResponse(
        poles=jnp.concatenate([t.poles for t in terms], axis=-1),
        coef=jnp.concatenate([t.coef for t in terms], axis=-1),
    )


def convolve(resp: StateResponse, poles, coef) -> StateResponse:
    r"""Response of a linear system with impulse response ``g`` driven by ``resp``.

    Parameters
    ----------
    resp : StateResponse
        :math:`f`: poles and coefficients ``[C, M]`` (one row per dose compartment).
    poles, coef : arrays [K]
        :math:`g(u) = \sum_k coef_k e^{-poles_k u}`, the impulse response of the downstream
        system (e.g. ``e^{-k u}`` for the amount in a one-compartment metabolite receiving a unit
        input, or ``k_{e0} e^{-k_{e0} u}`` for an effect compartment).

    Returns
    -------
    StateResponse
        Poles ``[C, M + K]`` (those of ``f``, then those of ``g``) and coefficients of
        :math:`f * g`.

    Notes
    -----
    A downstream pole within :data:`CONFLUENT_RTOL` (relative) of an upstream pole carrying a
    non-zero coefficient is moved up by twice that amount, so no divided difference is 0/0. The
    relative error this causes is about ``2e-8·β·u`` (below 1e-6 for ``β·u < 50``), while the
    cancellation error of the divided difference stays near ``1e-16/1e-8``.
    """
    alpha = resp.poles[..., :, None]  # [C, M, 1]
    a = resp.coef[..., :, None]
    beta = jnp.asarray(poles, dtype=float)
    b = jnp.asarray(coef, dtype=float)
    h = CONFLUENT_RTOL * jnp.abs(beta)  # [K]
    close = (jnp.abs(alpha - beta) < h) & (a != 0)  # [C, M, K]
    shift = jnp.any(close, axis=-2)  # [C, K]: per dose-compartment row
    beta_c = beta[None, :] + jnp.where(shift, 2.0 * h[None, :], 0.0)  # [C, K]
    diff = alpha - beta_c[:, None, :]  # [C, M, K]
    w = a * b[None, None, :] / jnp.where(diff == 0, 1.0, diff)
    w = jnp.where(a * b[None, None, :] == 0, 0.0, w)
    c_alpha = -jnp.sum(w, axis=-1)  # [C, M]
    c_beta = jnp.sum(w, axis=-2)  # [C, K]
    return StateResponse(
        poles=jnp.concatenate([resp.poles, beta_c], axis=-1),
        coef=jnp.concatenate([c_alpha, c_beta], axis=-1),
    )


def superpose_multi(poles, coefs, doses, t, seq, segment, kinds=None, pairs=None):
    """Several responses on one set of poles: :func:`pkpd.pk.analytic.superpose_many`."""
    return analytic.superpose_many(poles, coefs, doses, t, seq, segment, kinds, pairs)
