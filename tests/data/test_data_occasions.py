"""Occasions in the data (issue 21, item 1): an OCC column or a rule over the doses; every
problem reported at once with its line and column; occasions per subject in the summary."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.cli import main
from pkpd.data import DatasetError

TEXT = """ID,TIME,EVID,AMT,DV,OCC,WT
1,0,1,100,.,1,70
1,1,0,0,5,1,70
1,168,1,100,.,2,70
1,169,0,0,5,2,70
2,0,1,100,.,C1,80
2,1,0,0,5,C1,80
2,168,1,100,.,C2,80
2,170,0,0,4,C2,80
2,336,1,100,.,C3,80
2,337,0,0,4,C3,80
"""


def test_an_occ_column_gives_each_record_its_occasion():
    ds = pkpd.read_dataset(io.StringIO(TEXT))
    assert ds.records["OCC"].tolist() == ["1", "1", "2", "2", "C1", "C1", "C2", "C2", "C3", "C3"]
    assert "OCC" not in ds.covariates and ds.covariates == ("WT",)
    occ = ds.summary()["occasions"]
    assert occ == {
        "source": "column OCC",
        "min": 2,
        "median": 2.5,
        "max": 3,
        "subjects_with_several": 2,
    }
    assert "occasions (column OCC): 2-3 per subject" in ds.summary_text()
    # numeric labels compare as numbers, as IDs do
    again = pkpd.read_dataset(io.StringIO(TEXT.replace(",1,70", ",1.0,70")))
    assert again.records["OCC"].tolist()[:2] == ["1", "1"]


def test_data_without_occasions_have_none():
    text = "\n".join(
        ",".join(line.split(",")[:5] + line.split(",")[6:]) for line in TEXT.strip().split("\n")
    )
    ds = pkpd.read_dataset(io.StringIO(text))
    assert "OCC" not in ds.records and ds.summary()["occasions"] is None
    assert "occasions" not in ds.summary_text()


def test_every_occasion_problem_is_reported_at_once_with_line_and_column():
    lines = TEXT.strip().split("\n")
    lines[2] = "1,1,0,0,5,.,70"  # line 3: no occasion
    lines[8] = "2,170,0,0,4,C1,80"  # line 9: C1 again after C2
    lines.append("2,400,0,0,3,C2,80")  # line 12: C2 again after C3
    with pytest.raises(DatasetError) as err:
        pkpd.read_dataset(io.StringIO("\n".join(lines) + "\n"))
    got = {(p.line, p.column) for p in err.value.problems}
    assert got == {(3, "OCC"), (9, "OCC"), (12, "OCC")}
    text = str(err.value)
    assert "every record needs the occasion it belongs to" in text
    assert "occasion C1 of subject 2 comes back after occasion C2" in text
    assert "occasion C2 of subject 2 comes back after occasion C3" in text


def test_two_occasion_columns_or_a_column_and_a_rule_are_refused():
    both = TEXT.replace("OCC,WT", "OCC,OCCASION").replace(",70\n", ",1\n").replace(",80\n", ",1\n")
    with pytest.raises(DatasetError, match="more than one column for the same role"):
        pkpd.read_dataset(io.StringIO(both))
    with pytest.raises(DatasetError, match="also given as a rule; use one"):
        pkpd.read_dataset(io.StringIO(TEXT), occasions="dose")
    with pytest.raises(DatasetError, match="is not an occasion rule; expected 'dose'"):
        pkpd.read_dataset(io.StringIO(TEXT), occasions="weekly")


# A subject with a pre-dose sample, a dose with no sample after it, an ADDL record, and a
# pre-dose trough listed before its dose (NONMEM's order).
DESIGN = [
    # TIME, EVID, AMT, ADDL, II
    (0, 0, 0, 0, 0),  # baseline before any dose -> occasion 1
    (1, 1, 100, 0, 0),  # sampled -> starts occasion 1
    (3, 0, 0, 0, 0),
    (25, 1, 100, 0, 0),  # not sampled before the next dose -> stays in 1
    (49, 1, 100, 2, 24),  # sampled (ADDL doses at 73, 97 belong to it) -> occasion 2
    (101, 0, 0, 0, 0),
    (169, 0, 0, 0, 0),  # trough before the dose at the same time -> still 2
    (169, 1, 100, 0, 0),  # sampled -> occasion 3
    (171, 0, 0, 0, 0),
]


def _design_frame():
    rows = [dict(ID=7, TIME=t, EVID=e, AMT=a, ADDL=n, II=ii, DV=(5.0 if e == 0 else np.nan))
            for t, e, a, n, ii in DESIGN]  # fmt: skip
    return pd.DataFrame(rows)


def test_occasions_from_the_doses_that_are_sampled():
    ds = pkpd.read_dataset(_design_frame(), occasions="dose")
    assert ds.records["OCC"].tolist() == ["1", "1", "1", "1", "2", "2", "2", "3", "3"]
    assert ds.summary()["occasions"]["max"] == 3


@pytest.mark.parametrize("rule, hours", [("every 48 h", 48.0), ("every 2 d", 48.0),
                                         ("every 1 w", 168.0), ("Every 0.5 weeks", 84.0)])  # fmt: skip
def test_occasions_in_cycles_from_the_first_dose(rule, hours):
    df = _design_frame()
    ds = pkpd.read_dataset(df, occasions=rule)
    t0 = 1.0  # the first dose
    want = [str(1 if t <= t0 else math.floor((t - t0) / hours) + 1) for t in df.TIME]
    assert ds.records["OCC"].tolist() == want
    assert f"every {hours:g} h" in ds.summary_text()


def test_cli_validate_derives_and_shows_occasions(tmp_path, capsys):
    path = tmp_path / "d.csv"
    _design_frame().to_csv(path, index=False, na_rep=".")
    assert main(["validate", str(path), "--occasions", "dose"]) == 0
    assert "occasions (each dose record followed by an observation starts one): 3-3" in (
        capsys.readouterr().out
    )
    assert main(["validate", str(path), "--occasions", "cycle"]) == 2
    assert "not an occasion rule" in capsys.readouterr().err
