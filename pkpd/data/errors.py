"""Dataset problems, collected and reported together."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

#: How many problems of one kind (same message up to numbers, same column) ``str(DatasetError)``
#: shows before summarising the rest as "... and N more problems of this kind". The full list is
#: always in :attr:`DatasetError.problems`; :meth:`DatasetError.render` takes another limit.
MAX_PROBLEMS_SHOWN_PER_KIND = 20

_NUMBER = re.compile(r"[0-9]+(?:[.,][0-9]+)*")


def escape_text(s: str) -> str:
    """``s`` with every non-printable character written as a Python escape (``\\x1b``, ``\\t``).

    Data cells, column names and file names reach problem messages and summaries; escaping keeps
    terminal control sequences and stray control characters from acting on the reader's terminal.
    """
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


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

    @property
    def kind(self) -> tuple[str | None, str]:
        """The problem's kind: its column and its message with numbers blanked out.

        Problems of one kind are summarised together once there are many of them.
        """
        return self.column, _NUMBER.sub("#", self.message)

    def __str__(self) -> str:
        parts = []
        if self.line is not None:
            parts.append(f"{self.where} {self.line}")
        if self.column is not None:
            parts.append(f"column {self.column}")
        if self.value is not None:
            parts.append(f"value {self.value!r}")
        loc = ", ".join(parts)
        return escape_text(f"{loc}: {self.message}" if loc else self.message)


class DatasetError(ValueError):
    """Raised once with every problem found in a dataset.

    ``problems`` holds every :class:`Problem`, in file order. ``str(err)`` lists them, showing at
    most ``max_shown_per_kind`` problems of each kind (default
    :data:`MAX_PROBLEMS_SHOWN_PER_KIND`) and the count of the rest; non-printable characters are
    escaped.

    Parameters
    ----------
    problems : iterable of Problem
    source : str, optional
        The file name (or other description) shown in the first line.
    max_shown_per_kind : int or None, optional
        How many problems of each kind ``str(err)`` shows; ``None`` shows all.
    """

    def __init__(
        self,
        problems: Iterable[Problem],
        source: str | None = None,
        *,
        max_shown_per_kind: int | None = MAX_PROBLEMS_SHOWN_PER_KIND,
    ):
        self.problems = list(problems)
        self.source = source
        self.max_shown_per_kind = max_shown_per_kind
        super().__init__(self.render(max_shown_per_kind))

    def render(self, max_shown_per_kind: int | None = MAX_PROBLEMS_SHOWN_PER_KIND) -> str:
        """The problems as text, at most ``max_shown_per_kind`` of each kind (``None``: all).

        The first omitted problem of a kind is replaced by one line saying how many more of that
        kind there are and on which lines; the total count is always in the first line.
        """
        n = len(self.problems)
        head = f"{n:,} problem{'s' if n != 1 else ''} in dataset"
        if self.source:
            head += f" {escape_text(str(self.source))}"
        out = []
        if max_shown_per_kind is None:
            out = [f"  - {p}" for p in self.problems]
        else:
            limit = max(int(max_shown_per_kind), 0)
            count: dict[tuple, int] = {}
            rest: dict[tuple, list[Problem]] = {}
            for p in self.problems:
                k = p.kind
                count[k] = count.get(k, 0) + 1
                if count[k] > limit:
                    rest.setdefault(k, []).append(p)
            seen: dict[tuple, int] = {}
            for p in self.problems:
                k = p.kind
                seen[k] = seen.get(k, 0) + 1
                if seen[k] <= limit:
                    out.append(f"  - {p}")
                elif seen[k] == limit + 1:
                    more = rest[k]
                    lines = [q.line for q in more if q.line is not None]
                    span = ""
                    if lines:
                        where = more[0].where
                        span = (
                            f" ({where}s {min(lines)}-{max(lines)})"
                            if len(lines) > 1
                            else f" ({where} {lines[0]})"
                        )
                    col = f"column {k[0]}: " if k[0] is not None else ""
                    word = "problem" if len(more) == 1 else "problems"
                    out.append(
                        escape_text(
                            f"  - ... and {len(more):,} more {word} of this kind{span}: "
                            f"{col}{more[0].message}"
                        )
                    )
        return head + ":\n" + "\n".join(out)
