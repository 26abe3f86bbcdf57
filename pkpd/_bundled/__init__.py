"""Where pkpd's bundled priors and datasets are.

In the repository they are the top-level ``priors/`` and ``datasets/`` folders; ``setup.py``
installs them as ``pkpd._bundled.priors`` and ``pkpd._bundled.datasets`` (in a wheel, copies
inside the package; in an editable install, the repository's folders). :func:`folder` finds
them either way, and in a plain checkout on ``sys.path`` too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

KINDS = ("priors", "datasets")


def folder(kind: str) -> Path:
    """The folder of bundled ``kind`` (``"priors"`` or ``"datasets"``)."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {KINDS}")
    try:
        spec = importlib.util.find_spec(f"pkpd._bundled.{kind}")
    except ModuleNotFoundError:
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location)
        if path.is_dir():
            return path
    # a checkout imported from its root (not installed): the repository's own folder
    return Path(__file__).resolve().parents[2] / kind
