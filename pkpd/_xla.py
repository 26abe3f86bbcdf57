"""XLA settings pkpd applies before JAX starts its CPU backend.

``--xla_cpu_experimental_ynn_fusion_type=`` (empty: no YNNPACK fusions). jaxlib 0.10 hands
small reductions (e.g. the gradient of a response with respect to its poles, summed over grid
nodes) to YNNPACK kernels that cost several times more than XLA's own loops at pkpd's sizes:
with them off, the gradient of the temsirolimus PK fit was ~15% and that of the joint PK/PD
fit ~25% cheaper on this project's 2-core machine (``benchmarks/RESULTS.md``).

XLA aborts on flags it does not know, so the flag is set only for jaxlib versions where it was
checked to exist (:data:`CHECKED_JAXLIB`), only when ``XLA_FLAGS`` does not already mention it,
only before the backend starts, and never when ``PKPD_XLA_DEFAULTS=off``.
"""

from __future__ import annotations

import os

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type="
#: jaxlib (major, minor) versions whose XLA has the flag.
CHECKED_JAXLIB = ((0, 10),)


def apply_cpu_defaults() -> bool:
    """Add pkpd's XLA flags to ``XLA_FLAGS`` when it is safe; True when they were added."""
    if os.environ.get("PKPD_XLA_DEFAULTS", "").lower() in ("off", "0", "false", "no"):
        return False
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return False
    try:
        import jaxlib
        from jax._src import xla_bridge

        version = tuple(int(x) for x in jaxlib.__version__.split(".")[:2])
        if version not in CHECKED_JAXLIB or xla_bridge.backends_are_initialized():
            return False
    except Exception:  # an unexpected jaxlib layout: leave XLA alone
        return False
    os.environ["XLA_FLAGS"] = (flags + " " + YNN_FLAG).strip()
    return True
