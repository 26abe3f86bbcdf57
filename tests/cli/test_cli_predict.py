"""``pkpd predict``: predictions on every record, checked against NONMEM's CP (nmtests)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pkpd.cli import main

from paths import NMTESTS, needs_nmtests

REF = NMTESTS
needs_ref = needs_nmtests
PRIMARY = REF / "mrgsolve_nmtests" / "1001_input.csv"
PARAMS = "cl=1.1,v=20,ka=1.5,lag_central=LAGT,f_central=BIOAV,dur_central=DUR2"


@needs_ref
def test_predict_primary_nmtests_matches_nonmem(tmp_path, capsys):
    out = tmp_path / "pred.csv"
    # the nmtests scenarios give F up to 2.23 (NONMEM's F is a relative bioavailability)
    rc = main(["predict", str(PRIMARY), "--model", "one_cmt_oral", "--params", PARAMS,
               "--allow-f-above-1", "--out", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    pred = pd.read_csv(out)
    ref = pd.read_csv(REF / "mrgsolve_nmtests" / "1001_reference.csv")
    assert len(pred) == len(ref) == 3837
    # input rows kept as they were, plus PRED
    inp = pd.read_csv(PRIMARY)
    assert list(pred.columns) == list(inp.columns) + ["PRED"]
    pd.testing.assert_frame_equal(pred[inp.columns], inp)
    err = np.abs(pred["PRED"] - ref["CP_NONMEM"])
    assert np.all(err <= 1e-4 * np.abs(ref["CP_NONMEM"]) + 1e-6)


@needs_ref
def test_predict_structural_parameters_from_columns_advan4(tmp_path):
    src = pd.read_csv(REF / "mrgsolve_advan4_1005" / "1005_reference.csv")
    data = tmp_path / "advan4.csv"
    src.drop(columns=["IPRE_NONMEM"]).to_csv(data, index=False)
    out = tmp_path / "pred.csv"
    rc = main(["predict", str(data), "--model", "two_cmt_oral", "--params",
               "cl=CL,v1=V2,q=Q,v2=V3,ka=KA", "--out", str(out)])  # fmt: skip
    assert rc == 0
    pred = pd.read_csv(out)["PRED"] / 1000.0  # ng/mL -> mg/L, NONMEM's IPRE = A2/V2
    ref = src["IPRE_NONMEM"]
    assert np.all(np.abs(pred - ref) <= 2e-4 * np.abs(ref) + 1e-6)


def _small(tmp_path):
    df = pd.DataFrame(
        {"ID": [1, 1, 2, 2], "TIME": [0, 1, 0, 1], "EVID": [1, 0, 1, 0], "AMT": [100, 0, 100, 0],
         "DV": [".", 1, ".", 1], "WT": [70, 80, 60, 60], "LAG": [0.5, 0.5, 0, 0]}
    )  # fmt: skip
    path = tmp_path / "small.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("model", "params", "message"),
    [
        ("one_cmpt", "cl=1,v=2", "unknown model 'one_cmpt'; known models:"),
        ("one_cmt_iv", "cl=1,V=2", "unknown parameter(s) V"),
        ("one_cmt_iv", "cl=1", "missing parameter(s) v"),
        ("one_cmt_iv", "cl=1,v", "'v' is not NAME=VALUE"),
        ("one_cmt_iv", "cl=1,v=2,lag_central=NOPE", "column 'NOPE', which the data do not have"),
        ("one_cmt_iv", "cl=WT,v=2", "'cl' = column 'WT' changes within subject(s) 1"),
    ],
)
def test_predict_bad_input_exit_2(tmp_path, capsys, model, params, message):
    rc = main(["predict", str(_small(tmp_path)), "--model", model, "--params", params,
               "--out", str(tmp_path / "o.csv")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert "Traceback" not in err


def test_predict_dose_modifier_from_column_and_dataset_error(tmp_path, capsys):
    path = _small(tmp_path)
    out = tmp_path / "o.csv"
    assert main(["predict", str(path), "--model", "one_cmt_iv", "--params",
                 "cl=1,v=10,lag_central=LAG", "--out", str(out)]) == 0  # fmt: skip
    pred = pd.read_csv(out)["PRED"].to_numpy()
    k = 0.1
    np.testing.assert_allclose(
        pred, [0.0, 1e4 * np.exp(-k * 0.5), 1e4, 1e4 * np.exp(-k)], rtol=1e-12
    )
    # a dose into a compartment the model does not have is a dataset problem
    bad = tmp_path / "bad.csv"
    pd.read_csv(path).assign(CMT=[3, 0, 1, 0]).to_csv(bad, index=False)
    assert main(["predict", str(bad), "--model", "one_cmt_iv", "--params", "cl=1,v=10",
                 "--out", str(out)]) == 2  # fmt: skip
    assert "CMT" in capsys.readouterr().err


def test_predict_subprocess_no_traceback(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "pkpd.cli", "predict", str(_small(tmp_path)), "--model", "nope",
         "--params", "cl=1", "--out", str(tmp_path / "o.csv")],
        capture_output=True, text=True, timeout=1800,  # a hang guard, not a time limit
    )  # fmt: skip
    assert r.returncode == 2
    assert "known models" in r.stderr and "Traceback" not in r.stderr


def test_predict_temsirolimus_gives_each_record_its_endpoint(tmp_path):
    """Each observation record gets its own analyte (DVID 1 temsirolimus, 2 sirolimus)."""
    import jax
    import jax.numpy as jnp

    import pkpd
    from pkpd.models.temsirolimus import TYPICAL, TemsirolimusModel

    data = tmp_path / "tem.csv"
    data.write_text(
        "ID,TIME,EVID,AMT,DUR,DVID,DV\n1,0,1,25,0.5,.,.\n1,0.5,0,.,.,1,580\n1,24,0,.,.,2,30\n"
        "1,24,0,.,.,1,9\n1,168,0,.,.,2,.\n"
    )
    pk = {k: TYPICAL[k] for k in ("cl", "v1", "q", "v2", "fm", "cl_sir", "v_sir")}
    out = tmp_path / "pred.csv"
    params = ",".join(f"{k}={v}" for k, v in pk.items())
    proc = subprocess.run(
        [sys.executable, "-m", "pkpd.cli", "predict", str(data), "--model", "temsirolimus",
         "--params", params, "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = pd.read_csv(out)["PRED"].to_numpy()
    subj = jax.tree.map(
        lambda x: jnp.asarray(x[0]), pkpd.read_dataset(data).to_arrays(prediction_rows="all").data
    )
    ref = TemsirolimusModel(endpoints=("temsirolimus", "sirolimus")).predict(pk, subj)
    tem, sir = np.asarray(ref["temsirolimus"]), np.asarray(ref["sirolimus"])
    np.testing.assert_allclose(got, [tem[0], tem[1], sir[2], tem[3], sir[4]], rtol=1e-12)
    assert got[2] != got[3]  # same time, different analytes
