r"""Saturable binding in blood (Langmuir): whole-blood and unbound concentrations.

A drug that binds a saturable site in blood cells (capacity ``bmax``, dissociation constant
``kd``) and, in proportion, non-saturable sites (``kns``) has, at unbound concentration
:math:`C_u`,

.. math::
    C_{wb} = (1 + k_{ns})\,C_u + \frac{b_{max}\,C_u}{k_d + C_u},

so whole-blood exposure rises less than proportionally with dose once the sites fill (as for
temsirolimus and everolimus in the literature the temsirolimus model cites).
"""

from __future__ import annotations

import jax.numpy as jnp


def unbound_from_blood(c_wb, bmax, kd, kns):
    """Invert the Langmuir relation: the unbound concentration for a whole-blood one.

    Solves ``a·u² + (a·kd + bmax − c)·u − c·kd = 0`` (``a = 1 + kns``) for its positive root,
    written without cancellation. Units as the inputs (all in the same concentration unit).
    """
    a = 1.0 + kns
    b = a * kd + bmax - c_wb
    disc = jnp.sqrt(b * b + 4.0 * a * c_wb * kd)
    # u = (-b + disc) / (2a) = 2·c·kd / (b + disc): the second form when b > 0
    return jnp.where(b > 0, 2.0 * c_wb * kd / (b + disc), (disc - b) / (2.0 * a))
