"""The aggregate-data file (published arm-level summaries): read, checked, every problem at once
with its line and column, and values converted to the model's units."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from pkpd.data import DatasetError
from pkpd.data.aggregate import read_aggregate

GOOD = """\
# published summaries (synthetic)
STUDY,ARM,REGIMEN,N,ENDPOINT,METRIC,WINDOW,TIME_H,STATISTIC,VALUE,SPREAD,SPREAD_VALUE,UNIT,SOURCE,BSA
CX1,low,100 mg once,12,conc,cmax,,,mean,2.1,sd,0.4,mg/L,Table 2,1.9
CX1,low,100 mg once,12,conc,auc_0_inf,,,geomean,20,cv,30,mg*h/L,Table 2,1.9
CX1,high,300 mg q12h x3,10,conc,ctrough,ss,,median,1.1,,,µg/mL,Table 3,1.8
"""


def _text(s, name="arms.csv"):
    f = io.StringIO(s)
    f.name = name
    return f


def test_a_good_file_is_read_and_converted_to_the_models_units():
    agg = read_aggregate(_text(GOOD), model="one_cmt_iv")
    # a study whose name starts with C is data, not a NONMEM comment line
    assert [r.study for r in agg.rows] == ["CX1"] * 3
    assert agg.arms == [("CX1", "low"), ("CX1", "high")]
    cmax, auc, trough = agg.rows
    assert (cmax.line, auc.line, trough.line) == (3, 4, 5)
    assert cmax.value_model == pytest.approx(2100.0) and cmax.model_unit == "ng/mL"
    assert cmax.spread_model == pytest.approx(400.0)  # an SD converts with the value
    assert auc.value_model == pytest.approx(20000.0) and auc.model_unit == "ng*h/mL"
    assert auc.spread_model == pytest.approx(30.0)  # a CV is unitless
    assert trough.value_model == pytest.approx(1100.0) and trough.window == "ss"
    assert cmax.window == "c1"  # the default window
    assert agg.covariates == ("BSA",) and trough.covariates == {"BSA": 1.8}
    table = agg.table()
    assert list(table["value_model"].round(6)) == [2100.0, 20000.0, 1100.0]


def test_every_problem_is_reported_at_once_with_line_and_column():
    bad = GOOD + (
        "CX2,x,25 mg/m2 qw,0,conc,cmax,,4,mode,-1,,3,mg/dL,,abc\n"
        "CX2,y,100 mg q1w x4,5,conc,cmax,c1,,geomean,3,sd,1,mg/L,s,1.9\n"
        "CX1,low,200 mg once,12,conc,value,,2,mean,1.0,,,mg/L,s,1.9\n"
        "CX1,low,100 mg once,12,conc,cmax,,,mean,2.2,sd,0.4,mg/L,again,1.9\n"
    )
    with pytest.raises(DatasetError) as err:
        read_aggregate(_text(bad))
    got = {(p.line, p.column) for p in err.value.problems}
    want = {
        (6, "SOURCE"),  # empty: cite the publication
        (6, "REGIMEN"),  # open-ended without HORIZON_H
        (6, "N"),  # 0 subjects
        (6, "STATISTIC"),  # "mode"
        (6, "SPREAD"),  # a SPREAD_VALUE without saying what it is
        (6, "TIME_H"),  # a time on a cmax
        (6, "VALUE"),  # a negative Cmax
        (6, "BSA"),  # not a number
        (7, "SPREAD"),  # an SD with a geometric mean
        (8, "REGIMEN"),  # another regimen than line 3's for the same arm
        (9, None),  # the same summary as line 3
    }
    assert want <= got, sorted(got - want, key=str)
    text = str(err.value)
    assert "arms.csv" in text and "line 6, column N" in text
    assert "same summary as line 3" in text


def test_missing_columns_and_empty_files_are_refused():
    with pytest.raises(DatasetError, match="missing column.*SOURCE"):
        read_aggregate(_text("STUDY,ARM,REGIMEN,N,ENDPOINT,METRIC,STATISTIC,VALUE,UNIT\n"))
    header = GOOD.splitlines()[1] + "\n"
    with pytest.raises(DatasetError, match="no rows"):
        read_aggregate(_text(header))


def test_rows_are_checked_against_the_model():
    text = GOOD + (
        "CX1,low,100 mg once,12,effect,cmax,,,mean,3,,,ng/mL,s,1.9\n"
        "CX1,low,100 mg once,12,conc,cmax,,,median,3,,,mg,s,1.9\n"
        "CX1,low,100 mg once,12,conc,auc_tau,,,mean,3,,,ng/mL,s,1.9\n"
    )
    with pytest.raises(DatasetError) as err:
        read_aggregate(_text(text), model="one_cmt_iv")
    got = {(p.line, p.column) for p in err.value.problems}
    assert got == {(6, "ENDPOINT"), (7, "UNIT"), (8, "UNIT")}
    assert "no endpoint 'effect'" in str(err.value)
    assert "AUC unit" in str(err.value)


def test_a_dataframe_reads_like_a_file():
    df = pd.read_csv(io.StringIO(GOOD), comment="#")
    agg = read_aggregate(df, model="one_cmt_iv")
    assert [r.value_model for r in agg.rows] == pytest.approx([2100.0, 20000.0, 1100.0])
