"""The project's notebooks in tests: stored without outputs, executed top to bottom in a
kernel (a child process: it inherits the environment the test sets, e.g.
``PKPD_NOTEBOOK_SMALL``), and what they displayed."""

from __future__ import annotations

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


def assert_stored_clean(path):
    """No outputs or execution counts stored, and exactly one cell tagged ``parameters``, the
    second."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, path.name
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and nb.cells.index(tagged[0]) == 1, path.name


def execute(path, cwd):
    """The notebook at ``path`` run top to bottom with ``cwd`` as its working folder (raises
    ``CellExecutionError``, with the cell and traceback, on failure); returns it, outputs in."""
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=3600,  # per cell: a hang guard, not a time limit (a busy machine is slow)
        kernel_name="python3",
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()
    return nb


def figures(nb) -> int:
    """How many PNG figures the executed notebook displayed."""
    return sum(
        1
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    )


def printed(nb) -> str:
    """Everything its code cells printed."""
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
