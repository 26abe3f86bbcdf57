"""Writing output files atomically: a temporary file in the same folder, renamed into place."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path``.

    An interrupted or failing write leaves no partial ``path`` (and no temporary file). The
    file gets the usual permissions (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read_marked(path, read: Callable[[Path], object], *, marker: str, what: str, writer: str,
                error: type[Exception]):  # fmt: skip
    """Read a pkpd output file and check it carries its ``marker`` attribute.

    Raises ``error`` with a clear message for a missing file, a file ``read`` cannot open
    (not netCDF) and a netCDF file that is not a pkpd ``what`` (no ``marker``).
    """
    path = Path(path)
    if not path.exists():
        raise error(f"no such {what} file: {path}")
    try:
        obj = read(path)
    except Exception as e:  # noqa: BLE001 - any reader failure means: not a readable file
        raise error(f"{path} is not a netCDF {what} file ({type(e).__name__}: {e})") from None
    if not int(obj.attrs.get(marker, 0)):
        raise error(
            f"{path} is a netCDF file but not a pkpd {what} (no '{marker}' attribute); give a "
            f"file written by {writer}"
        )
    return obj
