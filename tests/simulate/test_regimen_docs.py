"""Every regimen string in the documentation parses to the dose table it is meant to give.

Strings are collected from README.md, docs/ (when it exists), the notebooks, ``pkpd demo``
(pkpd/report/demo.py) and the ``pkpd simulate --regimen`` help (pkpd/cli.py): every quoted
string (``"..."``, ``'...'`` or a backtick span) that starts with a dose (a number and a unit
such as ``mg`` or ``mg/m2``), except dictionary keys (the labels of a regimen mapping). Each must
have a hand-written dose table in :data:`EXPECTED`; a new string in the docs without one fails
with a message saying to add it.
"""

from __future__ import annotations

import json
import re

import pytest

from pkpd import Regimen

from paths import ROOT

WEEK = 168.0

_DOSE_START = r"\d+(?:\.\d+)?\s*(?:mg/m2|mg/m²|mg/kg|mg|mcg|µg|ug|g)(?![a-z0-9])"
_QUOTED = re.compile(
    r"(?P<q>[\"'`])(?P<s>" + _DOSE_START + r"[^\"'`\n]*)(?P=q)(?P<after>\s*:)?", re.IGNORECASE
)


def _sources() -> dict[str, str]:
    """Text of every documentation file, by path relative to the repository root."""
    files = [ROOT / "README.md", ROOT / "pkpd" / "report" / "demo.py", ROOT / "pkpd" / "cli.py"]
    if (ROOT / "docs").is_dir():
        files += sorted(p for p in (ROOT / "docs").rglob("*") if p.suffix in (".md", ".rst"))
    out = {}
    for f in files:
        if f.is_file():
            out[str(f.relative_to(ROOT))] = f.read_text(encoding="utf-8")
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        out[str(nb.relative_to(ROOT))] = "\n".join(
            "".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells
        )
    return out


def _regimen_strings(text: str) -> list[str]:
    return [m["s"] for m in _QUOTED.finditer(text) if not m["after"]]


SOURCES = _sources()
FOUND: dict[str, list[str]] = {}
for _path, _text in SOURCES.items():
    for _s in _regimen_strings(_text):
        FOUND.setdefault(_s, []).append(_path)

# text -> the dose table it is meant to give: times (h), amounts (in ``unit``), infusion
# times (h); ``horizon_h`` for open-ended regimens. Written by hand, not from the parser.
EXPECTED: dict[str, dict] = {
    # docs/getting-started.md: oral regimens of a one-compartment oral model (no infusion)
    "200 mg q12h x14": dict(
        time=[12.0 * k for k in range(14)], amount=[200.0] * 14, unit="mg", dur=[0.0] * 14
    ),
    "400 mg q24h x7": dict(
        time=[24.0 * k for k in range(7)], amount=[400.0] * 7, unit="mg", dur=[0.0] * 7
    ),
    # notebooks/03_your_model.ipynb: two weeks of daily oral doses
    "100 mg q24h x 14": dict(
        time=[24.0 * k for k in range(14)], amount=[100.0] * 14, unit="mg", dur=[0.0] * 14
    ),
    "300 mg q24h x 14": dict(
        time=[24.0 * k for k in range(14)], amount=[300.0] * 14, unit="mg", dur=[0.0] * 14
    ),
    "25 mg q1w x12 over 30 min": dict(
        time=[k * WEEK for k in range(12)], amount=[25.0] * 12, unit="mg", dur=[0.5] * 12
    ),
    "75 mg q1w x12 over 30 min": dict(
        time=[k * WEEK for k in range(12)], amount=[75.0] * 12, unit="mg", dur=[0.5] * 12
    ),
    # issue 27: the 30-min infusion binds to the loading doses too
    "175 mg q1w x3 then 75 mg q1w x9 over 30 min": dict(
        time=[k * WEEK for k in range(12)],
        amount=[175.0] * 3 + [75.0] * 9,
        unit="mg",
        dur=[0.5] * 12,
    ),
    # README: a loading dose, then the weekly phase from week 2
    "175 mg once then 75 mg q1w x3": dict(
        time=[0.0, WEEK, 2 * WEEK, 3 * WEEK],
        amount=[175.0, 75.0, 75.0, 75.0],
        unit="mg",
        dur=[0.0] * 4,
    ),
    "15 mg/m2 qd x5 q2w": dict(
        horizon_h=672.0,
        time=[0.0, 24.0, 48.0, 72.0, 96.0, 336.0, 360.0, 384.0, 408.0, 432.0],
        amount=[15.0] * 10,
        unit="mg/m2",
        dur=[0.0] * 10,
    ),
    "25 mg q1w x12 over 1 h, hold week 5": dict(
        time=[k * WEEK for k in range(12) if k != 4], amount=[25.0] * 11, unit="mg", dur=[1.0] * 11
    ),
    "15 mg/m2 q1w x12, hold week 5": dict(
        time=[k * WEEK for k in range(12) if k != 4],
        amount=[15.0] * 11,
        unit="mg/m2",
        dur=[0.0] * 11,
    ),
}


def test_strings_are_found_in_every_source():
    # The extractor finds something in each file, and the string of issue 27 where it is used.
    for path in ("README.md", "pkpd/report/demo.py", "notebooks/02_simulate.ipynb"):
        assert path in SOURCES, f"{path} is missing"
        assert _regimen_strings(SOURCES[path]), f"no regimen string found in {path}"
        assert path in FOUND.get("175 mg q1w x3 then 75 mg q1w x9 over 30 min", []), path
    # labels of a regimen mapping are not regimens
    assert "25 mg weekly" not in FOUND and "175 mg weekly x3, then 75 mg" not in FOUND


@pytest.mark.parametrize("text", sorted(FOUND), ids=lambda s: s)
def test_documented_regimen_gives_its_intended_dose_table(text):
    where = ", ".join(sorted(set(FOUND[text])))
    if text not in EXPECTED:
        pytest.fail(
            f"regimen string {text!r} (in {where}) has no expected dose table: add one to EXPECTED "
            "in tests/simulate/test_regimen_docs.py (dose times in h, amounts, unit, infusion times in h, "
            "and horizon_h if it is open-ended), worked out by hand from what the text means"
        )
    exp = EXPECTED[text]
    table = Regimen(text).dose_table(exp.get("horizon_h", float("inf")))
    n = len(exp["time"])
    assert len(table) == n, f"{text!r} (in {where}): {len(table)} doses, expected {n}"
    assert table["TIME"].tolist() == exp["time"], where
    assert table["AMOUNT"].tolist() == exp["amount"], where
    assert set(table["UNIT"]) == {exp["unit"]}, where
    assert table["INFUSION_H"].tolist() == exp["dur"], (
        f"{text!r} (in {where}): infusion times {table['INFUSION_H'].tolist()}, "
        f"expected {exp['dur']}"
    )
    assert Regimen(text).describe()
