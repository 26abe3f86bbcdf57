"""Reading NONMEM-style data: conventions, defaults, units, events and padded arrays."""

from __future__ import annotations

import io
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.data import DatasetError
from pkpd.data.arrays import events_frame, unpad_points

from paths import ROOT

EXAMPLE = ROOT / "datasets" / "examples" / "two_studies.csv"


def read_text(text: str, **kw) -> pkpd.Dataset:
    return pkpd.read_dataset(io.StringIO(text), **kw)


def test_headers_case_insensitive_dot_missing_and_comments():
    text = (
        "c,id,Time,evid,amt,cmt,dv,mdv,wt\n"
        "C comment after the header\n"
        ".,1,0,1,100,1,.,1,70\n"
        "# another comment\n"
        ".,1,1,0,.,1,5.5,0,.\n"
        "C,1,2,0,.,1,9,0,70\n"  # commented-out record (first character C)
        ".,1,3,0,.,1,4.5,0,70\n"
    )
    ds = read_text(text)
    r = ds.records
    assert list(r["TIME"]) == [0, 1, 3]
    assert list(r["LINE"]) == [3, 5, 7]
    assert ds.comment_lines == (2, 4, 6)
    assert r["AMT"].tolist() == [100, 0, 0]
    assert ds.covariates == ("WT",)  # the C column is NONMEM's comment column, not a covariate
    assert r["WT"].tolist() == [70, 70, 70]  # the '.' is filled from the subject's own record
    assert ds.filled_covariate_cells == 1
    assert ds.summary()["comment_lines"] == [2, 4, 6]


def test_whitespace_separated_file():
    ds = read_text("ID TIME AMT DV\n1 0 10 .\n1 1 0 3.2\n")
    assert ds.n_observations == 1 and ds.records["AMT"].iloc[0] == 10


def test_dataframe_input_reports_rows():
    df = pd.DataFrame({"ID": [1, 1], "TIME": [0.0, -1.0], "AMT": [5.0, 0.0], "DV": [np.nan, 2.0]})
    with pytest.raises(DatasetError) as info:
        pkpd.read_dataset(df)
    (p,) = info.value.problems
    assert p.where == "row" and p.line == 2 and p.column == "TIME"
    assert "row 2, column TIME" in str(info.value)


def test_defaults_evid_mdv_and_prediction_only_rows():
    # No EVID: AMT > 0 is a dose. No MDV: an observation without DV is a prediction-only point.
    ds = read_text("ID,TIME,AMT,DV\n1,0,10,.\n1,1,.,3\n1,2,.,.\n")
    r = ds.records
    assert r["EVID"].tolist() == [1, 0, 0]
    assert r["MDV"].tolist() == [1, 0, 1]
    s = ds.summary()
    assert s["observations"] == 1 and s["excluded_mdv1"] == 1 and s["records"] == 3


def test_nothing_is_dropped_mdv1_and_evid2_are_kept_and_counted():
    text = "ID,TIME,EVID,AMT,DV,MDV\n1,0,1,10,.,1\n1,1,0,.,3,1\n1,2,2,.,.,1\n1,3,0,.,2,0\n"
    ds = read_text(text)
    assert len(ds.records) == 4
    s = ds.summary()
    assert (s["excluded_mdv1"], s["evid2_records"], s["observations"]) == (1, 1, 1)
    pad = ds.to_arrays(prediction_rows="all")
    assert pad.data.point_valid.sum() == 4
    assert pad.data.point_mask.sum() == 1


def test_mg_per_m2_doses_are_converted_with_bsa_and_both_kept():
    text = (
        "ID,TIME,AMT,RATE,AMTU,DV,BSA\n"
        "1,0,20,40,mg/m2,.,1.5\n"
        "1,1,.,.,.,3,1.5\n"
        "2,0,25,0,mg,.,2.0\n"
        "2,1,.,.,.,3,2.0\n"
    )
    r = read_text(text).records
    dose1, dose2 = r.iloc[0], r.iloc[2]
    assert dose1["AMT"] == pytest.approx(30.0) and dose1["AMT_MG_M2"] == 20.0
    assert dose1["RATE"] == pytest.approx(60.0)  # mg/m2/h -> mg/h
    assert dose2["AMT"] == 25.0 and dose2["AMT_MG_M2"] == pytest.approx(12.5)
    # dose_unit argument when no unit column
    r2 = read_text("ID,TIME,AMT,DV,BSA\n1,0,10,.,1.8\n1,1,.,2,1.8\n", dose_unit="mg/m2").records
    assert r2["AMT"].iloc[0] == pytest.approx(18.0)


def test_blq_from_flag_and_from_lloq():
    text = (
        "ID,TIME,AMT,DV,LLOQ,BLQ\n"
        "1,0,10,.,.,0\n"
        "1,1,.,5,0.5,0\n"
        "1,2,.,0.3,0.5,0\n"  # below LLOQ without a flag: censored
        "1,3,.,.,0.5,1\n"  # flagged, no DV
        "1,4,.,0.5,.,1\n"  # flagged, DV holds the limit
    )
    ds = read_text(text)
    r = ds.records
    assert r["BLQ"].tolist() == [False, False, True, True, True]
    assert r["LLOQ"].iloc[4] == 0.5
    assert ds.summary()["blq"] == 3
    assert r["MDV"].tolist() == [1, 0, 0, 0, 0]


def test_endpoints_default_codes_custom_mapping_and_names():
    text = "ID,TIME,AMT,DVID,DV\n1,0,25,.,.\n1,1,.,1,300\n1,2,.,2,40\n1,3,.,4,55\n"
    ds = read_text(text)
    assert ds.endpoints == ("temsirolimus", "sirolimus", "vegf")
    ds2 = read_text(text, endpoints={1: "parent", 2: "metabolite", 4: "biomarker"})
    assert ds2.endpoints == ("parent", "metabolite", "biomarker")
    named = "ID,TIME,AMT,ENDPOINT,DV\n1,0,25,.,.\n1,1,.,S6K,80\n1,2,.,pd1_cd8,15\n"
    assert read_text(named).endpoints == ("s6k", "pd1_cd8")
    assert read_text("ID,TIME,AMT,DV\n1,0,1,.\n1,1,.,2\n").endpoints == ("conc",)


def test_several_studies_need_no_special_layout():
    text = "ID,STUDY,TIME,AMT,DV\n1,A,0,25,.\n1,A,1,.,3\n7,B,0,25,.\n7,B,2,.,4\n"
    ds = read_text(text)
    assert ds.studies == ("A", "B")
    assert ds.summary()["subjects_per_study"] == {"A": 1, "B": 1}
    pad = ds.to_arrays()
    assert pad.studies == ("A", "B") and pad.data.study.tolist() == [0, 1]


def test_ids_1_and_1_point_0_are_the_same_subject():
    ds = pkpd.read_dataset(
        pd.DataFrame({"ID": [1.0, 1.0], "TIME": [0, 1], "AMT": [1, 0], "DV": [None, 2]})
    )
    assert ds.subjects == ("1",)


def test_time_may_go_back_after_reset():
    ds = read_text("ID,TIME,EVID,AMT,DV\n1,0,1,10,.\n1,5,0,.,3\n1,0,4,10,.\n1,2,0,.,4\n")
    ev = ds.events()
    assert ev["SEGMENT"].tolist() == [0, 1]


# -- events --------------------------------------------------------------------------------------


def test_addl_expansion_equals_writing_the_doses_out():
    addl = (
        "ID,TIME,AMT,RATE,II,ADDL,SS,CMT,DV\n"
        "1,0,100,10,24,3,0,2,.\n"
        "1,100,.,.,.,.,.,2,5\n"
        "2,0,50,0,12,2,1,1,.\n"
        "2,40,.,.,.,.,.,2,5\n"
    )
    explicit = (
        "ID,TIME,AMT,RATE,II,SS,CMT,DV\n"
        "1,0,100,10,24,0,2,.\n1,24,100,10,24,0,2,.\n1,48,100,10,24,0,2,.\n1,72,100,10,24,0,2,.\n"
        "1,100,.,.,.,.,2,5\n"
        "2,0,50,0,12,1,1,.\n2,12,50,0,12,0,1,.\n2,24,50,0,12,0,1,.\n"
        "2,40,.,.,.,.,2,5\n"
    )
    cols = ["ID", "TIME", "EVID", "AMT", "RATE", "DUR", "CMT", "II", "SS", "SEGMENT"]
    a = read_text(addl).events()[cols].reset_index(drop=True)
    b = read_text(explicit).events()[cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    a_full = read_text(addl).events()
    assert a_full["ADDL_INDEX"].tolist() == [0, 1, 2, 3, 0, 1, 2]
    assert a_full["SEQ"].tolist() == [0, -1, -1, -1, 0, -1, -1]


def test_round_trip_dataset_events_arrays_keeps_every_record():
    ds = pkpd.read_dataset(EXAMPLE)
    ev = ds.events()
    for rows in ("observations", "all"):
        pad = ds.to_arrays(prediction_rows=rows)
        back = events_frame(pad)
        pd.testing.assert_frame_equal(
            back.reset_index(drop=True),
            ev[list(back.columns)].reset_index(drop=True),
            check_dtype=False,
        )
        d = pad.data
        rows_seen = np.sort(d.point_row[d.point_valid])
        want = np.arange(len(ds.records))
        if rows == "observations":
            want = want[ds.records["EVID"].isin((0, 2)).to_numpy()]
        np.testing.assert_array_equal(rows_seen, want)
        # values survive padding
        dv_back = unpad_points(pad, d.point_dv, len(ds.records))
        np.testing.assert_array_equal(dv_back[want], ds.records["DV"].to_numpy()[want])
    assert pad.data.point_mask.sum() == ds.n_observations


def test_padded_arrays_shapes_masks_and_vmap():
    ds = pkpd.read_dataset(EXAMPLE)
    pad = ds.to_arrays()
    d = pad.data
    S = ds.n_subjects
    D = ds.events().groupby("ID").size().max()
    assert d.dose_time.shape == (S, D) and d.dose_cov.shape == (S, D, len(ds.covariates))
    assert np.isfinite(d.dose_time).all() and np.isfinite(d.point_time).all()
    assert d.cov.shape == (S, len(ds.covariates))
    np.testing.assert_allclose(
        pad.covariate("BSA"), ds.records.groupby("ID", sort=False)["BSA"].first()
    )
    # A per-subject function vmapped over the pytree equals a pandas computation.
    total = jax.vmap(lambda s: jnp.sum(jnp.where(s.dose_mask, s.dose_amt, 0.0)))(
        jax.tree_util.tree_map(jnp.asarray, d)
    )
    want = ds.events().groupby("ID", sort=False)["AMT"].sum().to_numpy()
    np.testing.assert_allclose(np.asarray(total), want)
    with pytest.raises(KeyError, match="no covariate 'HT'"):
        pad.covariate("HT")


def test_cli_validate_good_file_prints_summary():
    proc = subprocess.run(
        [sys.executable, "-m", "pkpd.cli", "validate", str(EXAMPLE)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "subjects per study: PH1: 3, PH2: 3" in out
    assert "observations: 36 (temsirolimus: 36)" in out
    assert "below LLOQ (censored, M3): 7" in out
    assert "BSA:" in out
