"""Where the tests find the repository and the reference data kept beside it.

``ROOT`` is the repository (priors/, datasets/, notebooks/, docs/); ``NMTESTS`` holds NONMEM's
own outputs for the event-engine parity tests. They are GPL upstream, so they are not copied into
the repository: they live beside the clone, in ``../shared/reference/nmtests``, and the tests that
need them are skipped, with the path in the reason, where they are absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NMTESTS = ROOT.parent / "shared" / "reference" / "nmtests"

needs_nmtests = pytest.mark.skipif(
    not NMTESTS.is_dir(),
    reason=f"NONMEM reference tables not found at {NMTESTS} (they live beside the clone, in "
    "../shared/reference/nmtests; GPL upstream, so not copied into the repository)",
)
