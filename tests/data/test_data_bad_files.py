"""Every malformed file in tests/data/bad/ raises one DatasetError listing exactly its problems."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import pkpd
from pkpd.data import DatasetError

BAD = Path(__file__).parent / "bad"
EXPECTED = tomllib.loads((BAD / "expected.toml").read_text())


def test_corpus_is_large_and_complete():
    files = {p.stem for p in BAD.glob("*.csv")}
    assert len(files) >= 30
    assert files == set(EXPECTED), "every bad file needs an entry in expected.toml and vice versa"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_file_reports_every_problem(name):
    spec = EXPECTED[name]
    with pytest.raises(DatasetError) as info:
        pkpd.read_dataset(BAD / f"{name}.csv", **spec.get("kwargs", {}))
    problems = info.value.problems
    unmatched = list(problems)
    for want in spec["problems"]:
        hit = [
            p
            for p in unmatched
            if want["message"] in p.message
            and p.line == want.get("line")
            and p.column == want.get("column")
        ]
        assert hit, f"{name}: expected {want}, got:\n{info.value}"
        unmatched.remove(hit[0])
    assert not unmatched, f"{name}: unexpected extra problems:\n" + "\n".join(map(str, unmatched))
    # The rendered message names the line and the column, as a person reads it.
    text = str(info.value)
    for want in spec["problems"]:
        if "line" in want:
            assert f"line {want['line']}" in text
        if "column" in want:
            assert f"column {want['column']}" in text


def test_cli_validate_bad_file_exits_2_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "pkpd.cli", "validate", str(BAD / "many_problems_at_once.csv")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "4 problems" in proc.stderr
    for line in ("line 2", "line 3", "line 4", "line 5"):
        assert line in proc.stderr


def test_cli_validate_missing_file_exits_2():
    proc = subprocess.run(
        [sys.executable, "-m", "pkpd.cli", "validate", str(BAD / "no_such_file.csv")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "file not found" in proc.stderr
    assert "Traceback" not in proc.stderr
