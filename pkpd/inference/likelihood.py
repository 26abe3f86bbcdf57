r"""Residual error models and the censored (M3) likelihood, one observation at a time.

For a prediction :math:`f` and an observation :math:`y` of an endpoint with error model

* ``additive``: :math:`y \sim N(f, a)`;
* ``proportional``: :math:`y \sim N(f, b|f|)`;
* ``combined``: :math:`y \sim N(f, \sqrt{a^2 + b^2 f^2})`;
* ``lognormal``: :math:`\log y \sim N(\log f, \sigma)` (density on :math:`y`, with the Jacobian
  :math:`1/y`);
* ``logit`` (percentages): :math:`\mathrm{logit}(y/100) \sim N(\mathrm{logit}(f/100), \sigma)`
  (density on :math:`y`, Jacobian :math:`1/(y(1-y/100))`).

An observation below the quantification limit (BLQ) enters as censored, Beal's M3:
:math:`\log P(Y < \mathrm{LLOQ}) = \log\Phi\big((g(\mathrm{LLOQ}) - g(f))/s\big)` with
:math:`g` the error model's transform and :math:`s` its standard deviation at :math:`f`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import log_ndtr
from numpyro.distributions import constraints

#: Integer codes of the error models (the transform family of each).
NORMAL, LOGNORMAL, LOGIT = 0, 1, 2
KIND_OF_MODEL = {
    "additive": NORMAL,
    "proportional": NORMAL,
    "combined": NORMAL,
    "lognormal": LOGNORMAL,
    "logit": LOGIT,
}
#: Smallest standard deviation used (in the endpoint's unit, or on the log/logit scale), so a
#: proportional model predicting exactly 0 (before the first dose) stays a proper density.
SD_FLOOR = 1e-6
_TINY = 1e-12
_LOG_2PI = jnp.log(2.0 * jnp.pi)


def _transform(x, kind, kinds=None):
    if kinds is not None and set(kinds) <= {NORMAL}:
        return x
    xl = jnp.log(jnp.maximum(x, _TINY))
    p = jnp.clip(x / 100.0, _TINY, 1.0 - _TINY)
    xg = jnp.log(p) - jnp.log1p(-p)
    return jnp.select([kind == LOGNORMAL, kind == LOGIT], [xl, xg], x)


def _log_jacobian(y, kind, kinds=None):
    """log |dg/dy| for the transform g of each error model."""
    if kinds is not None and set(kinds) <= {NORMAL}:
        return 0.0
    yl = -jnp.log(jnp.maximum(y, _TINY))
    p = jnp.clip(y / 100.0, _TINY, 1.0 - _TINY)
    yg = -jnp.log(100.0) - jnp.log(p) - jnp.log1p(-p)
    return jnp.select([kind == LOGNORMAL, kind == LOGIT], [yl, yg], 0.0)


def residual_sd(f, kind, additive, proportional, sigma):
    """Standard deviation of each observation on its error model's scale."""
    var = additive**2 + (proportional * f) ** 2
    # sqrt only where it is used and positive: sqrt'(0) is inf, and inf x 0 would put NaN in
    # the gradient of the observations that use sigma instead
    use = (kind == NORMAL) & (var > 0)
    normal_sd = jnp.sqrt(jnp.where(use, var, 1.0))
    sd = jnp.where(kind == NORMAL, jnp.where(use, normal_sd, 0.0), sigma)
    return jnp.maximum(sd, SD_FLOOR)


def pointwise_loglik(y, f, kind, additive, proportional, sigma, lloq, blq, *, static=None):
    """Log-likelihood of each observation (censored where ``blq``).

    ``static``: optional ``(kinds, any_blq)`` known before tracing: the error-model kinds that
    occur and whether any observation is censored. Formulas for what cannot occur are then
    skipped (same values; a cheaper gradient inside NUTS).
    """
    kinds, any_blq = static if static is not None else (None, True)
    sd = residual_sd(f, kind, additive, proportional, sigma)
    gf = _transform(f, kind, kinds)
    y_safe = jnp.where(blq, jnp.where(jnp.isfinite(lloq), lloq, 1.0), y) if any_blq else y
    z = (_transform(y_safe, kind, kinds) - gf) / sd
    dens = -0.5 * z**2 - jnp.log(sd) - 0.5 * _LOG_2PI + _log_jacobian(y_safe, kind, kinds)
    if not any_blq:
        return dens
    lim = jnp.where(jnp.isfinite(lloq), lloq, 1.0)
    cens = log_ndtr((_transform(lim, kind, kinds) - gf) / sd)
    return jnp.where(blq, cens, dens)


def observed_values(y, lloq, blq) -> np.ndarray:
    """The observation vector the likelihood is given: a censored (BLQ) record's LLOQ (M3 uses
    only it; 1.0 where a BLQ record has no LLOQ), every other record's value."""
    return np.where(blq, np.nan_to_num(lloq, nan=1.0), y)


class ResidualLikelihood(dist.Distribution):
    """Independent observations under per-observation error models, with M3 censoring.

    All arguments are arrays ``[N]``: predictions ``f``, error-model ``kind``
    (:data:`NORMAL`, :data:`LOGNORMAL`, :data:`LOGIT`), ``additive``, ``proportional`` and
    ``sigma`` magnitudes, ``lloq`` and the ``blq`` flags; ``static`` as in
    :func:`pointwise_loglik`. ``log_prob`` is elementwise, so
    ArviZ gets a pointwise log-likelihood; ``sample`` draws uncensored replicate observations.
    """

    arg_constraints = {}
    support = constraints.real
    pytree_data_fields = ("f", "kind", "additive", "proportional", "sigma", "lloq", "blq")
    pytree_aux_fields = ("static",)

    def __init__(
        self, f, kind, additive, proportional, sigma, lloq, blq, *, static=None, validate_args=None
    ):
        self.static = static
        self.f, self.kind = f, kind
        self.additive, self.proportional, self.sigma = additive, proportional, sigma
        self.lloq, self.blq = lloq, blq
        super().__init__(batch_shape=jnp.shape(f), validate_args=validate_args)

    def log_prob(self, value):
        return pointwise_loglik(
            value,
            self.f,
            self.kind,
            self.additive,
            self.proportional,
            self.sigma,
            self.lloq,
            self.blq,
            static=self.static,
        )

    def sample(self, key, sample_shape=()):
        shape = sample_shape + self.batch_shape
        eps = jax.random.normal(key, shape)
        sd = residual_sd(self.f, self.kind, self.additive, self.proportional, self.sigma)
        g = _transform(self.f, self.kind) + sd * eps
        normal = g
        lognormal = jnp.exp(g)
        logit = 100.0 * jax.nn.sigmoid(g)
        return jnp.select([self.kind == LOGNORMAL, self.kind == LOGIT], [lognormal, logit], normal)
