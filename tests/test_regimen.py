"""Regimen values and the regimen-string parser."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd import Regimen, RegimenError
from pkpd.regimen import Phase

WEEK = 168.0


def times(r, **kw):
    return r.to_events(**kw)["TIME"].tolist()


def test_weekly_infusion():
    r = Regimen("25 mg q1w x12 over 30 min")
    ev = r.to_events()
    assert ev["TIME"].tolist() == [k * WEEK for k in range(12)]
    assert (ev["AMT"] == 25).all() and (ev["DUR"] == 0.5).all() and (ev["RATE"] == 0).all()
    assert r.n_doses == 12


def test_loading_then_maintenance():
    r = Regimen("175 mg q1w x3 then 75 mg q1w x9")
    ev = r.to_events()
    assert ev["AMT"].tolist() == [175.0] * 3 + [75.0] * 9
    assert ev["TIME"].tolist() == [k * WEEK for k in range(12)]


def test_daily_times_five_every_two_weeks_in_mg_per_m2():
    r = Regimen("15 mg/m2 qd x5 q2w")
    assert r.open_ended
    ev = r.to_events(bsa_m2=1.8, horizon_h=4 * WEEK)
    assert ev["TIME"].tolist() == [0, 24, 48, 72, 96, 336, 360, 384, 408, 432]
    np.testing.assert_allclose(ev["AMT"], 27.0)
    np.testing.assert_allclose(ev["AMT_MG_M2"], 15.0)
    with pytest.raises(RegimenError, match="bsa_m2"):
        r.to_events(horizon_h=WEEK)
    with pytest.raises(RegimenError, match="horizon_h"):
        r.to_events(bsa_m2=1.8)


def test_hold_week_skips_that_weeks_dose():
    r = Regimen("25 mg q1w x12 over 1 h, hold week 5")
    t = times(r)
    assert len(t) == 11 and 4 * WEEK not in t and 5 * WEEK in t
    assert (r.to_events()["DUR"] == 1.0).all()
    r2 = Regimen("25 mg q1w x12, hold weeks 5-6, 30 min")
    assert len(times(r2)) == 10
    r3 = Regimen("25 mg q1w x6, hold doses 2, 4")
    assert times(r3) == [0, 2 * WEEK, 4 * WEEK, 5 * WEEK]


@pytest.mark.parametrize(
    "text, n, interval, amount, dur",
    [
        ("25 mg IV q1w x12, 30 min", 12, WEEK, 25.0, 0.5),
        ("10 mg bid for 7 days", 14, 12.0, 10.0, 0.0),
        ("5 mg q12h x4 oral", 4, 12.0, 5.0, 0.0),
        ("250 mg weekly x4 over 60 min", 4, WEEK, 250.0, 1.0),
        ("25 mg once over 30 min", 1, 0.0, 25.0, 0.5),
        ("25 mg", 1, 0.0, 25.0, 0.0),
        ("0.5 g every 2 days x3", 3, 48.0, 500.0, 0.0),
        ("100 ug q8h x3", 3, 8.0, 0.1, 0.0),
        ("25 mg q1w for 8 weeks over 30 min", 8, WEEK, 25.0, 0.5),
        ("25 MG Q1W X2 OVER 30 MIN", 2, WEEK, 25.0, 0.5),
        ("25 mg q1w ×2", 2, WEEK, 25.0, 0.0),
    ],
)
def test_parser_cases(text, n, interval, amount, dur):
    ev = Regimen(text).to_events()
    assert len(ev) == n
    np.testing.assert_allclose(np.diff(ev["TIME"]), interval)
    np.testing.assert_allclose(ev["AMT"], amount)
    np.testing.assert_allclose(ev["DUR"], dur)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "non-empty"),
        ("25 q1w", "number without a unit"),
        ("mg 25", "character 1"),
        ("25 mg q1w x3, hold foo 5", "unknown modifier"),
        ("25 mg x3", "needs a frequency"),
        ("25 mg q1w then 75 mg q1w x2", "only the last phase may be open-ended"),
        ("25 mg 30 mg q1w", "second dose amount"),
        ("25 mg q1w x3 banana", "unknown word at character 14"),
        ("0 mg q1w x3", "positive"),
        ("25 mg q1w x0", "count must be >= 1"),
        ("25 mg qd x20 q1w", "not longer than"),
        ("25 mg q1w x4, hold week 0", "start at 1"),
        ("25 mg q1w x4, hold weeks 5-3", "backwards"),
        ("25 mg q1w for 10 days", "whole number of intervals"),
        ("25 mg once q1w", "'once' cannot"),
    ],
)
def test_parser_errors_say_where_and_what(text, fragment):
    with pytest.raises(RegimenError, match=fragment.replace("(", r"\(")):
        Regimen(text)


def test_string_round_trip():
    for text in [
        "25 mg q1w x12 over 30 min",
        "175 mg q1w x3 then 75 mg q1w x9",
        "15 mg/m2 qd x5 q2w",
        "20 mg/m2 qd x5 q2w x3 over 30 min",
        "25 mg q1w x12 over 1 h, hold week 5",
        "10 mg q12h x3 oral",
    ]:
        r = Regimen(text)
        assert Regimen(str(r)) == r, (text, str(r))


def test_values_and_reduction():
    r = Regimen(phases=[Phase(25.0, interval_h=WEEK, count=4, infusion_h=0.5)])
    assert r == Regimen("25 mg q1w x4 over 30 min")
    assert r.scaled(0.6).to_events()["AMT"].tolist() == [15.0] * 4
    with pytest.raises(RegimenError, match="interval"):
        Phase(25.0, count=3)


def _csv(text):
    return pkpd.read_dataset(io.StringIO(text))


CORE = ["TIME", "EVID", "AMT", "RATE", "DUR", "CMT", "II", "SS"]


def test_to_events_matches_what_the_reader_produces():
    # The same regimens written by hand as NONMEM records (with ADDL) read to the same events.
    ds = _csv("ID,TIME,AMT,DUR,II,ADDL,DV\n1,0,25,0.5,168,11,.\n1,2000,.,.,.,.,1\n")
    pd.testing.assert_frame_equal(
        ds.events()[CORE].reset_index(drop=True),
        Regimen("25 mg q1w x12 over 30 min").to_events()[CORE],
    )
    ds = _csv("ID,TIME,AMT,II,ADDL,DV\n1,0,175,168,2,.\n1,504,75,168,8,.\n1,2100,.,.,.,1\n")
    pd.testing.assert_frame_equal(
        ds.events()[CORE].reset_index(drop=True),
        Regimen("175 mg q1w x3 then 75 mg q1w x9").to_events()[CORE],
    )
    ds = _csv(
        "ID,TIME,AMT,AMTU,II,ADDL,BSA,DV\n1,0,15,mg/m2,24,4,1.7,.\n1,336,15,mg/m2,24,4,1.7,.\n"
        "1,700,.,.,.,.,1.7,1\n"
    )
    pd.testing.assert_frame_equal(
        ds.events()[CORE + ["AMT_MG_M2"]].reset_index(drop=True),
        Regimen("15 mg/m2 qd x5 q2w x2").to_events(bsa_m2=1.7)[CORE + ["AMT_MG_M2"]],
    )


def test_to_records_reads_back():
    r = Regimen("25 mg q1w x12 over 1 h, hold week 5")
    recs = r.to_records()
    ds = pkpd.read_dataset(recs)
    pd.testing.assert_frame_equal(ds.events()[CORE].reset_index(drop=True), r.to_events()[CORE])
