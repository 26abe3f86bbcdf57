"""XLA settings pkpd applies before JAX starts its CPU backend.

``--xla_cpu_experimental_ynn_fusion_type=`` (empty: no YNNPACK fusions). jaxlib 0.10 hands
small reductions (e.g. the gradient of a response with respect to its poles, summed over grid
nodes) to YNNPACK kernels that cost several times more than XLA's own loops at pkpd's sizes:
with them off, the gradient of the temsirolimus PK fit was ~15% and that of the joint PK/PD
fit ~25% cheaper on this project's 2-core machine (``benchmarks/RESULTS.md``).

XLA aborts on flags it does not know, so the flag is set only for jaxlib versions where it was
checked to exist (:data:`CHECKED_JAXLIB`), only when ``XLA_FLAGS`` does not already mention it,
only before the backend starts, and never when ``PKPD_XLA_DEFAULTS=off``.

Float64: pharmacometric models need it (concentrations span many decades; NONMEM parity is
checked to 1e-4 relative), and JAX's switch is global to the process. ``import pkpd`` turns it
on (:func:`enable_x64`), the only process-wide setting pkpd makes besides the XLA flag above,
without importing JAX itself (``pkpd --help`` and ``pkpd validate`` never import it). A user
who turns it off (``JAX_ENABLE_X64=0`` before importing pkpd, or
``jax.config.update("jax_enable_x64", False)`` after) gets a clear error from pkpd's entry
points (:func:`require_x64`) instead of silently rounded results.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata

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
        version = tuple(int(x) for x in metadata.version("jaxlib").split(".")[:2])
        if version not in CHECKED_JAXLIB:
            return False
        if "jax" in sys.modules:  # JAX imported already: is its backend up?
            from jax._src import xla_bridge

            if xla_bridge.backends_are_initialized():
                return False
    except Exception:  # an unexpected jaxlib layout: leave XLA alone
        return False
    os.environ["XLA_FLAGS"] = (flags + " " + YNN_FLAG).strip()
    return True


_FALSY = ("0", "false", "off", "no")


def enable_x64() -> None:
    """Turn on JAX's float64: through ``JAX_ENABLE_X64`` when JAX is not imported yet (JAX
    reads it when it starts), through ``jax.config`` when it is. An explicit
    ``JAX_ENABLE_X64=0`` of the user's is left alone (:func:`require_x64` then refuses)."""
    if "jax" in sys.modules:
        if os.environ.get("JAX_ENABLE_X64", "").lower() not in _FALSY:
            sys.modules["jax"].config.update("jax_enable_x64", True)
        return
    if os.environ.get("JAX_ENABLE_X64", "").lower() not in _FALSY:
        os.environ["JAX_ENABLE_X64"] = "1"


class Float64Off(RuntimeError):
    """JAX's float64 is off in this process: pkpd will not compute in float32."""


def require_x64(what: str = "pkpd") -> None:
    """Raise :class:`Float64Off` when JAX's float64 is off (see the module docstring)."""
    import jax

    if not jax.config.jax_enable_x64:
        raise Float64Off(
            f"{what} computes in float64, but JAX's float64 is off in this process "
            f"(JAX_ENABLE_X64={os.environ.get('JAX_ENABLE_X64', '<unset>')}, "
            "jax_enable_x64=False). Concentrations span many decades and float32 rounds them: "
            "turn it on with jax.config.update('jax_enable_x64', True) before creating any "
            "array, or unset JAX_ENABLE_X64."
        )


def enable_compilation_cache(folder: str | None = None) -> str | None:
    """Keep JAX's compiled programs on disk, so that a second run of the same program (the same
    fit again, or a fit of other data on the same design) loads it instead of compiling.

    The folder is ``folder``, else ``$PKPD_CACHE_DIR`` or ``~/.cache/pkpd/jax``;
    ``PKPD_CACHE_DIR=off`` turns the cache off. Programs that took over 0.2 s to compile are
    stored. Returns the folder
    (``None``: off, or not writable). The CLI's fit, simulate, report, demo and sbc commands
    turn it on; :func:`pkpd.sbc` turns it on for its run when JAX has no cache folder.
    """
    from pathlib import Path

    where = folder or os.environ.get("PKPD_CACHE_DIR", str(Path.home() / ".cache" / "pkpd" / "jax"))
    if where.lower() == "off":
        return None
    try:
        Path(where).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the cache
    import jax

    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return where
