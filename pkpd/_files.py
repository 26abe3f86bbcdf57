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


class OutputError(ValueError):
    """An output path that would overwrite an input or cannot be written."""


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_outputs(outputs, inputs) -> None:
    """Check, before any long work, that every output can be written and overwrites no input.

    Parameters
    ----------
    outputs : mapping of str to path
        What each output is (``"--out"``, ``"summary CSV"``) and its path.
    inputs : mapping of str to path or None
        What each input is (``"data"``, ``"--priors"``) and its path; ``None`` entries are
        skipped.

    Raises
    ------
    OutputError
        Naming every output that is one of the inputs (the same file after resolving links),
        an existing folder, or inside a folder that cannot be written.
    """
    problems = []
    ins = {k: Path(v) for k, v in inputs.items() if v is not None}
    for what, out in outputs.items():
        out = Path(out)
        for in_what, path in ins.items():
            if _same_file(out, path):
                problems.append(
                    f"{what} {out} is the {in_what} file; writing it would destroy the input. "
                    "Give another output path"
                )
        if out.is_dir():
            problems.append(f"{what} {out} is a folder; expected a file path")
            continue
        # The nearest folder that exists: atomic_write creates the missing ones below it.
        folder = out.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            problems.append(f"{what} {out}: {folder} is not a folder")
            continue
        try:
            fd, probe = tempfile.mkstemp(prefix=".pkpd-write-check.", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            problems.append(f"{what} {out} cannot be written: {e.strerror or e} ({folder})")
    if problems:
        raise OutputError("; ".join(problems))


def check_output_folder(folder) -> None:
    """Check, before any work, that files can be written in ``folder`` (created if missing)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--out {folder} exists and is not a folder")
    check_outputs({"--out": folder / "probe"}, {})
