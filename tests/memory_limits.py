"""A bounded address space for tests that must show an input cannot make pkpd run away."""

from __future__ import annotations

import contextlib
import resource


@contextlib.contextmanager
def memory_allowance(extra_bytes=2 * 2**30):
    """Cap the address space at what the process holds now plus ``extra_bytes``."""
    with open("/proc/self/status") as fh:
        vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm + extra_bytes
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
