"""Dataset problems, collected and reported together."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, and where.

    Parameters
    ----------
    message : str
        What is wrong and what was expected instead.
    line : int or None
        1-based line of the file (the header is the first non-comment line), or the 1-based
        row of a DataFrame given directly. ``None`` for problems about the whole table.
    column : str or None
        The column, upper-case as pkpd reads headers.
    value : str or None
        The offending cell as written.
    where : str
        ``"line"`` for files, ``"row"`` for DataFrames.
    """

    message: str
    line: int | None = None
    column: str | None = None
    value: str | None = None
    where: str = "line"

    def __str__(self) -> str:
        parts = []
        if self.line is not None:
            parts.append(f"{self.where} {self.line}")
        if self.column is not None:
            parts.append(f"column {self.column}")
        if self.value is not None:
            parts.append(f"value {self.value!r}")
        loc = ", ".join(parts)
        return f"{loc}: {self.message}" if loc else self.message


class DatasetError(ValueError):
    """Raised once with every problem found in a dataset.

    ``problems`` holds the :class:`Problem` records in file order; ``str(err)`` lists them all.
    """

    def __init__(self, problems: Iterable[Problem], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} in dataset"
        if self.source:
            head += f" {self.source}"
        return head + ":\n" + "\n".join(f"  - {p}" for p in self.problems)
