"""Regimen values and the regimen-string parser."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd import Regimen, RegimenError
from pkpd.regimen import Hold, Phase

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


# -- one grammar: an infusion time, route or unit written once binds to every phase ----------------
README_STRING = "175 mg q1w x3 then 75 mg q1w x9 over 30 min"


def test_readme_loading_regimen_infuses_every_dose_over_30_min():
    # Issue 27: the string of the README, `pkpd demo` and notebook 02 gave the three loading
    # doses as boluses.
    ev = Regimen(README_STRING).to_events()
    assert ev["TIME"].tolist() == [k * WEEK for k in range(12)]
    assert ev["AMT"].tolist() == [175.0] * 3 + [75.0] * 9
    assert ev["DUR"].tolist() == [0.5] * 12
    assert (ev["RATE"] == 0).all()
    assert str(Regimen(README_STRING)) == (
        "175 mg q1w x3 over 30 min then 75 mg q1w x9 over 30 min"
    )


@pytest.mark.parametrize(
    "text, amt, dur",
    [
        # stated in the first phase only: binds to the second too
        ("100 mg q1w x2 over 1 h then 50 mg q1w x2", [100, 100, 50, 50], [1, 1, 1, 1]),
        # 'bolus' keeps a phase a bolus next to an infusion phase
        ("100 mg q1w x2 bolus then 50 mg q1w x2 over 1 h", [100, 100, 50, 50], [0, 0, 1, 1]),
        # different times stated in every phase: each keeps its own
        (
            "100 mg q1w x2 over 1 h then 50 mg q1w x2 over 30 min",
            [100] * 2 + [50] * 2,
            [1, 1, 0.5, 0.5],
        ),
        # the trailing modifier is the default of the phases stating none
        (
            "100 mg q1w x2 then 50 mg q1w x2 over 1 h, 30 min",
            [100] * 2 + [50] * 2,
            [0.5, 0.5, 1, 1],
        ),
        ("100 mg q1w x2 then 50 mg q1w x2, over 45 min", [100] * 2 + [50] * 2, [0.75] * 4),
        # the same time stated in two phases binds to the one between them
        (
            "100 mg q1w x1 over 1 h then 60 mg q1w x1 then 50 mg q1w x1 over 60 min",
            [100, 60, 50],
            [1, 1, 1],
        ),
        # a unit written once: the bare number takes it (0.25 g = 250 mg)
        ("175 mg q1w x3 then 75 q1w x9 over 30 min", [175] * 3 + [75] * 9, [0.5] * 12),
        ("0.5 g q1w x2 then 0.25 q1w x2", [500, 500, 250, 250], [0, 0, 0, 0]),
        # no phase states a time: boluses, as before
        ("175 mg q1w x3 then 75 mg q1w x9", [175] * 3 + [75] * 9, [0] * 12),
    ],
)
def test_infusion_time_and_unit_written_once_bind_to_every_phase(text, amt, dur):
    ev = Regimen(text).to_events()
    assert ev["AMT"].tolist() == [float(a) for a in amt]
    assert ev["DUR"].tolist() == [float(d) for d in dur]
    assert ev["TIME"].tolist() == [k * WEEK for k in range(len(amt))]


def test_route_written_once_binds_and_oral_phases_take_no_infusion_time():
    t = Regimen("5 mg q12h x2 oral then 10 mg q12h x2").dose_table()
    assert t["ROUTE"].tolist() == ["oral"] * 4
    assert t["TIME"].tolist() == [0.0, 12.0, 24.0, 36.0]
    # an infusion time says IV, so the second phase is not taken for oral
    t = Regimen("5 mg q12h x2 oral then 10 mg q1w x2 over 30 min").dose_table()
    assert t["ROUTE"].tolist() == ["oral", "oral", "iv", "iv"]
    assert t["INFUSION_H"].tolist() == [0.0, 0.0, 0.5, 0.5]
    assert t["TIME"].tolist() == [0.0, 12.0, 24.0, 24.0 + WEEK]
    # a trailing infusion time goes to the IV phases only
    t = Regimen("5 mg q12h x2 po then 10 mg q1w x2 iv, 30 min").dose_table()
    assert t["INFUSION_H"].tolist() == [0.0, 0.0, 0.5, 0.5]


@pytest.mark.parametrize(
    "text, fragments",
    [
        (
            "175 mg q1w x3 over 30 min then 50 mg q1w x2 then 75 mg q1w x9 over 1 h",
            [
                "phase 2 ('50 mg q1w x2', character 32) states no infusion time",
                "'50 mg q1w x2 over 30 min' or '50 mg q1w x2 over 1 h'",
                "every phase",
            ],
        ),
        (
            "100 mg q1w x2 bolus then 60 mg q1w x2 then 50 mg q1w x2 over 1 h",
            ["'60 mg q1w x2 bolus' or '60 mg q1w x2 over 1 h'"],
        ),
        (
            "5 mg q12h x2 po then 10 mg q12h x3 iv then 3 mg qd x2",
            ["phase 3", "states no route", "'3 mg qd x2 iv' or '3 mg qd x2 oral'"],
        ),
        (
            "25 mg q1w x3 then 10 q1w x2 then 3 mg/m2 q1w x2",
            ["phase 2", "states no dose unit", "'10 mg' or '10 mg/m2'"],
        ),
        ("25 mg q1w x3 over 30 min then 10 mg q1w x2 over 1 h, 45 min", ["applies to no phase"]),
        ("25 mg q1w x3 oral, 1 h", ["applies to no phase", "no IV dose"]),
        ("5 mg q12h x4 oral over 30 min", ["oral dose has no infusion time", "character 19"]),
        ("25 mg q1w x3 over 30 min bolus", ["second infusion time"]),
        ("25 mg q1h x3 over 2 h", ["longer than the dosing interval (1 h)"]),
        ("25 mg q1w x3, 30 min, 1 h", ["second trailing infusion time"]),
        ("25 mg q1w x3 oral iv", ["two routes in one phase"]),
    ],
)
def test_ambiguous_or_contradictory_binding_is_refused_showing_the_readings(text, fragments):
    with pytest.raises(RegimenError) as e:
        Regimen(text)
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))


def test_str_states_every_phase_and_parses_back():
    for text, written in [
        (README_STRING, "175 mg q1w x3 over 30 min then 75 mg q1w x9 over 30 min"),
        (
            "175 mg q1w x3 bolus then 75 mg q1w x9 over 30 min",
            "175 mg q1w x3 bolus then 75 mg q1w x9 over 30 min",
        ),
        ("5 mg q12h x2 po then 10 mg q12h x2", "5 mg q12h x2 oral then 10 mg q12h x2 oral"),
        ("25 mg q1w x6, hold doses 2, 4-5", "25 mg q1w x6, hold doses 2, 4-5"),
        ("25 mg q1w x12, hold weeks 5-6, 30 min", "25 mg q1w x12 over 30 min, hold weeks 5-6"),
    ]:
        r = Regimen(text)
        assert str(r) == written
        assert Regimen(str(r)) == r


# -- describe(): the dose table in words ------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        (
            README_STRING + ", hold week 5",
            "weeks 1-3: 175 mg IV over 30 min weekly (3 doses); "
            "weeks 4-12: 75 mg IV over 30 min weekly (9 doses); "
            "held: week 5 (1 dose); 11 doses in all",
        ),
        ("25 mg q1w x12 over 1 h", "weeks 1-12: 25 mg IV over 1 h weekly (12 doses)"),
        (
            "20 mg/m2 qd x5 q2w x3 over 90 min",
            "weeks 1-6: 20 mg/m2 IV over 90 min daily x5, repeated every 2 weeks for 3 cycles "
            "(15 doses)",
        ),
        (
            "15 mg/m2 qd x5 q2w",
            "from week 1: 15 mg/m2 IV bolus daily x5, repeated every 2 weeks (open-ended)",
        ),
        ("5 mg q12h x4 oral", "days 1-2: 5 mg oral every 12 h (4 doses)"),
        ("25 mg once over 30 min", "week 1: 25 mg IV over 30 min, single dose"),
        (
            "25 mg q2w x6, hold doses 2, 4",
            "weeks 1-12: 25 mg IV bolus every 2 weeks (6 doses); held: doses 2, 4 (2 doses); "
            "4 doses in all",
        ),
        (
            "2 mg/kg q3w x4 then 1 mg/kg q1w x2",
            "weeks 1-12: 2 mg/kg IV bolus every 3 weeks (4 doses); "
            "weeks 13-14: 1 mg/kg IV bolus weekly (2 doses); 6 doses in all",
        ),
        ("5 mg q5h x3", "0-10 h: 5 mg IV bolus every 5 h (3 doses)"),
    ],
)
def test_describe_writes_the_dose_table_in_words(text, expected):
    assert Regimen(text).describe() == expected


def test_describe_of_a_regimen_built_from_values():
    r = Regimen(
        phases=[
            Phase(50.0, interval_h=WEEK, count=2, infusion_h=0.5),
            Phase(10.0, interval_h=24.0, count=3, route="oral"),
        ],
        holds=[Hold("dose", ((2, 2),))],
    )
    # phase 2 starts on day 15 and lasts 3 days: not whole weeks, so the table is in days
    assert r.describe() == (
        "days 1-14: 50 mg IV over 30 min weekly (2 doses); "
        "days 15-17: 10 mg oral daily (3 doses); held: dose 2 (1 dose); 4 doses in all"
    )
    assert Regimen(phases=r.phases, holds=[Hold("dose", (2,))]) == r
    assert r.to_events()["TIME"].tolist() == [0.0, 2 * WEEK, 2 * WEEK + 24, 2 * WEEK + 48]


def test_simulation_plan_carries_the_description():
    from pkpd.simulate.plan import plan_regimen

    plan = plan_regimen("load", Regimen(README_STRING), 12 * WEEK)
    assert plan.description == (
        "weeks 1-3: 175 mg IV over 30 min weekly (3 doses); "
        "weeks 4-12: 75 mg IV over 30 min weekly (9 doses); 12 doses in all"
    )
    assert plan.text == "175 mg q1w x3 over 30 min then 75 mg q1w x9 over 30 min"
    np.testing.assert_array_equal(plan.dur, [0.5] * 12)


# -- holds that refer to nothing, no dose left, sizes ----------------------------------------------
@pytest.mark.parametrize(
    "text, fragments",
    [
        (
            "25 mg q1w x12, hold week 20",
            ["'hold week 20'", "past the end", "weeks 1-12", "dose numbers 1-12"],
        ),
        ("25 mg q1w x3, hold dose 5", ["'hold dose 5'", "past the end", "dose numbers 1-3"]),
        ("25 mg q1w x12, hold weeks 10-14", ["'hold weeks 10-14'", "week 14", "weeks 1-12"]),
        (
            "25 mg q1w x4, hold weeks 2-100000000000000000000",
            ["week 100000000000000000000", "weeks 1-4"],
        ),
        ("25 mg q2w x6, hold week 2", ["'hold week 2' holds no dose", "weeks 1, 3, 5, 7, 9, 11"]),
        (README_STRING + ", hold week 13", ["'hold week 13'", "weeks 1-12"]),
    ],
)
def test_holds_that_refer_to_no_dose_are_errors(text, fragments):
    with pytest.raises(RegimenError) as e:
        Regimen(text)
    for f in fragments:
        assert f in str(e.value), (f, str(e.value))


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("25 mg q1w x1, hold dose 1", "its only dose is held ('hold dose 1')"),
        ("25 mg q1w x3, hold week 1-3", "all of its 3 doses are held ('hold weeks 1-3')"),
        ("25 mg q1w x3, hold week 1, hold doses 2-3", "all of its 3 doses are held"),
    ],
)
def test_a_regimen_with_no_dose_left_is_an_error(text, fragment):
    with pytest.raises(RegimenError, match="no dose left") as e:
        Regimen(text)
    assert fragment in str(e.value)


def test_no_dose_before_the_horizon_is_an_error():
    with pytest.raises(RegimenError, match="no dose before horizon_h"):
        Regimen("25 mg q1w, hold week 1").to_events(horizon_h=100.0)


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("25 mg q1w x100000000000000000000", ["count of 100000000000000000000", "100000"]),
        ("25 mg q1w for 2000000 weeks", ["'for 2000000 weeks' (2e+06 doses)", "100000"]),
        ("25 mg qd x1000 q2w x1000", ["1000000 doses", "100000"]),
        ("25 mg q1w x60000 then 25 mg q1d x60000", ["120000 doses", "100000"]),
    ],
)
def test_counts_past_the_maximum_are_refused_before_anything_is_built(text, fragments):
    with pytest.raises(RegimenError) as e:
        Regimen(text)
    for f in fragments + ["max_doses"]:
        assert f in str(e.value), (f, str(e.value))


def test_dose_limit_from_values_and_horizons_and_raising_it():
    from pkpd.regimen import MAX_DOSES

    assert MAX_DOSES == 100_000
    with pytest.raises(RegimenError, match="100000000000000000000 doses, more than the maximum"):
        Regimen(phases=[Phase(25.0, interval_h=WEEK, count=10**20)])
    open_ended = Regimen("25 mg q1d")
    with pytest.raises(RegimenError, match=r"up to horizon_h=1e\+30 h has"):
        open_ended.to_events(horizon_h=1e30)
    with pytest.raises(RegimenError, match="150000 doses"):
        open_ended.dose_table(150_000 * 24.0)
    assert len(open_ended.dose_table(150_000 * 24.0, max_doses=150_000)) == 150_000
    big = Regimen("1 mg q1h x150000", max_doses=150_000)
    assert big.n_doses == 150_000
    assert big.to_events()["TIME"].iloc[-1] == 149_999.0
    with pytest.raises(RegimenError, match="max_doses=0"):
        Regimen("25 mg", max_doses=0)


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda: Phase(25.0, interval_h=math.inf, count=2), "interval_h must be a finite"),
        (lambda: Phase(25.0, interval_h=WEEK, count=2, infusion_h=math.nan), "infusion_h"),
        (lambda: Phase(25.0, interval_h=WEEK, count=2.5), "whole number"),
        (lambda: Phase(25.0, interval_h=1.0, count=2, infusion_h=2.0), "overlap"),
        (lambda: Phase(25.0, route="oral", infusion_h=0.5), "oral dose has no infusion"),
        (lambda: Phase(25.0, interval_h=24, count=2, cycle_h=math.inf), "cycle_h"),
        (lambda: Phase(25.0, interval_h=24, count=2, cycle_h=WEEK, cycles=0), "cycles"),
        (lambda: Regimen("25 mg q1w x2").scaled(0.0), "factor"),
        (lambda: Regimen("25 mg q1w x2").scaled(math.nan), "factor"),
        (lambda: Regimen("25 mg q1w x2").dose_table(math.nan), "NaN"),
        (lambda: Regimen("9" * 400 + " mg"), "positive number"),
        (lambda: Regimen("25 mg q" + "9" * 400 + "w x2"), "finite"),
    ],
)
def test_non_finite_or_absurd_values_are_regimen_errors(make, fragment):
    with pytest.raises(RegimenError, match=fragment):
        make()


def test_simulation_stores_the_description_and_refuses_a_regimen_with_no_dose(tmp_path):
    from pkpd.simulate import fit_from_values, load_simulation, save_simulation, simulate

    rows = []
    for i in range(4):
        rows.append(dict(ID=i + 1, TIME=0.0, EVID=1, AMT=100.0, DV=np.nan, WT=60.0))
        rows += [dict(ID=i + 1, TIME=t, EVID=0, AMT=0.0, DV=1.0, WT=60.0) for t in (1.0, 4.0)]
    fit = fit_from_values(
        "one_cmt_iv", pd.DataFrame(rows), {"cl": 2.0, "v": 30.0}, n_draws=2, seed=3
    )
    regs = {"load": README_STRING, "flat": "25 mg q1w x12 over 30 min, hold week 5"}
    sim = simulate(fit, regs, n_subjects=2, n_draws=2, progress_bar=False)
    expected = [
        "weeks 1-3: 175 mg IV over 30 min weekly (3 doses); "
        "weeks 4-12: 75 mg IV over 30 min weekly (9 doses); 12 doses in all",
        "weeks 1-12: 25 mg IV over 30 min weekly (12 doses); held: week 5 (1 dose); "
        "11 doses in all",
    ]
    assert sim["regimen_description"].dims == ("regimen",)
    assert sim["regimen_description"].values.tolist() == expected
    assert sim["regimen_text"].values.tolist()[0] == (
        "175 mg q1w x3 over 30 min then 75 mg q1w x9 over 30 min"
    )
    save_simulation(sim, tmp_path / "sim.nc", summary=False)
    back = load_simulation(tmp_path / "sim.nc")
    assert [str(s) for s in back["regimen_description"].values] == expected
    # issue 28: a regimen with no dose left was a traceback inside simulate
    with pytest.raises(RegimenError, match="no dose left"):
        simulate(fit, "25 mg q1w x1, hold dose 1", n_subjects=2, n_draws=2, progress_bar=False)


def test_a_single_dose_then_a_phase_starts_one_interval_later():
    # a loading dose, then the weekly phase from week 2 (was: both at t = 0)
    ev = Regimen("175 mg once then 75 mg q1w x3 over 30 min").to_events()
    assert ev["TIME"].tolist() == [0.0, 168.0, 336.0, 504.0]
    assert ev["AMT"].tolist() == [175.0, 75.0, 75.0, 75.0]
    assert ev["DUR"].tolist() == [0.5] * 4
    ev = Regimen("25 mg then 10 mg q12h x2").to_events()
    assert ev["TIME"].tolist() == [0.0, 12.0, 24.0]
    r = Regimen("25 mg then 10 mg q1w x3")
    assert Regimen(str(r)).to_events()["TIME"].tolist() == [0.0, 168.0, 336.0, 504.0]


def test_two_single_doses_in_a_row_are_refused():
    with pytest.raises(RegimenError, match="single doses, so nothing says when the second"):
        Regimen("25 mg then 10 mg")
