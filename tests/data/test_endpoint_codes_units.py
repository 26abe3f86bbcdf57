"""Endpoint codes belong to the model, and observations are read in their endpoint's unit
(issue 27, items 2 and 3): DVID mapping, DVU / dv_units conversion, the pre-fit unit check."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd
import pytest

import pkpd
import pkpd.inference.fit as fit_module
from pkpd.cli import main
from pkpd.data import DEFAULT_ENDPOINTS, DatasetError, DataUnitWarning, unit_factor
from pkpd.datasets import path as dataset_path
from pkpd.inference.fit import FitError, prepare
from pkpd.inference.priors import load_priors
from pkpd.models import load_model
from pkpd.models.predict import concentration_scale_warning

# A one-compartment oral study whose concentrations carry DVID=1, the usual NONMEM habit.
DVID1 = (
    "ID,TIME,EVID,AMT,DVID,DV\n"
    "1,0,1,100,.,.\n"
    "1,1,0,.,1,2100\n"
    "1,4,0,.,1,1500\n"
    "2,0,1,100,.,.\n"
    "2,1,0,.,1,1900\n"
    "2,4,0,.,1,1400\n"
)
TWO_CODES = (
    "ID,TIME,EVID,AMT,DVID,DV\n"
    "1,0,1,100,.,.\n"
    "1,1,0,.,1,2100\n"
    "1,2,0,.,2,40\n"
    "1,4,0,.,1,1500\n"
    "1,6,0,.,2,35\n"
)


def read(text: str, **kw) -> pkpd.Dataset:
    return pkpd.read_dataset(io.StringIO(text), **kw)


def phenobarbital(n: int = 12, seed: int = 7) -> pd.DataFrame:
    """Preterm-neonate-like phenobarbital data: doses in mg (20 mg/kg loading, 2.5 mg/kg every
    12 h), DV in mg/L, V = 1 L/kg x weight, CL = 0.005 L/h/kg (half-life about 140 h)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        wt = round(float(rng.uniform(0.7, 3.6)), 2)
        v = 1.0 * wt * np.exp(rng.normal(0, 0.1))
        k = 0.005 * wt * np.exp(rng.normal(0, 0.2)) / v
        doses = [(0.0, round(20 * wt, 1))] + [(12.0 * j, round(2.5 * wt, 2)) for j in range(1, 8)]
        for t, amt in doses:
            rows.append(dict(ID=i + 1, TIME=t, EVID=1, AMT=amt, DV=".", WT=wt))
        for t in (2.0, 50.0, 98.0):
            c = sum(a / v * np.exp(-k * (t - td)) for td, a in doses if td <= t)
            rows.append(dict(ID=i + 1, TIME=t, EVID=0, AMT=".", DV=round(c, 2), WT=wt))
    df = pd.DataFrame(rows).sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False])
    return df.reset_index(drop=True)


# -- endpoint codes ------------------------------------------------------------------------------


def test_models_declare_their_codes():
    tem = load_model("temsirolimus")
    assert tem.endpoint_codes == {
        1: "temsirolimus",
        2: "sirolimus",
        3: "s6k",
        4: "vegf",
        5: "pd1_cd8",
    }
    assert tem.endpoint_codes == DEFAULT_ENDPOINTS
    assert tem.with_endpoints(["temsirolimus"]).endpoint_codes == DEFAULT_ENDPOINTS
    # one-endpoint models take any single code
    assert load_model("one_cmt_oral").endpoint_codes is None


def test_one_endpoint_model_takes_the_datas_one_code():
    ds = read(DVID1, model="one_cmt_oral")
    assert ds.endpoints == ("conc",)
    assert ds.endpoint_codes == (("1", "conc"),)
    assert ds.records.loc[ds.records["EVID"] == 0, "ENDPOINT"].tolist() == ["conc"] * 4
    assert "DVID 1 \u2192 conc (ng/mL)" in ds.summary_text()
    assert "takes the data's one code" in ds.summary_text()
    # any single code, e.g. 7
    ds7 = read(DVID1.replace(",0,.,1,", ",0,.,7,"), model="one_cmt_oral")
    assert ds7.endpoints == ("conc",) and ds7.endpoint_codes == (("7", "conc"),)


def test_several_codes_for_a_one_endpoint_model_ask_for_a_mapping():
    with pytest.raises(DatasetError) as info:
        read(TWO_CODES, model="one_cmt_oral")
    (p,) = info.value.problems  # one problem, not one per record
    assert (p.line, p.column, p.value) == (4, "DVID", "2")
    assert "predicts one endpoint (conc)" in p.message
    assert "1 (2 observations, first on line 3), 2 (2 observations, first on line 4)" in p.message
    assert "--dvid 1=conc,2=NAME" in p.message
    assert "endpoints={1: 'conc', 2: 'NAME'}" in p.message


def test_explicit_mapping_is_used_and_shown():
    ds = read(TWO_CODES, model="one_cmt_oral", endpoints={1: "conc", 2: "pca"})
    assert ds.endpoints == ("conc", "pca")
    text = ds.summary_text()
    assert "endpoints: DVID 1 \u2192 conc (ng/mL), DVID 2 \u2192 pca [as mapped" in text
    # the mapped extra endpoint is left out of a fit by choosing the endpoints
    spec = prepare("one_cmt_oral", ds, endpoints=["conc"])
    assert spec.endpoints == ["conc"] and len(spec.obs_y) == 2


def test_without_a_model_the_default_temsirolimus_codes_are_named():
    ds = read(DVID1)
    assert ds.endpoints == ("temsirolimus",)
    text = ds.summary_text()
    assert "endpoints: DVID 1 \u2192 temsirolimus (ng/mL) [pkpd's default temsirolimus codes: "
    assert "no model given" in text and "--model" in text
    assert ds.summary()["endpoint_codes"] == {"1": "temsirolimus"}


def test_unknown_code_without_a_model_says_how_to_map():
    with pytest.raises(DatasetError) as info:
        read(DVID1.replace("1,1,0,.,1,2100", "1,1,0,.,9,2100"))
    (p,) = info.value.problems
    assert (p.line, p.column, p.value) == (3, "DVID", "9")
    assert "unknown endpoint; expected one of 1=temsirolimus" in p.message
    assert "--dvid" in p.message and "--model" in p.message


def test_bundled_data_read_the_same_with_the_temsirolimus_model():
    path = dataset_path("temsirolimus_small")
    a, b = pkpd.read_dataset(path), pkpd.read_dataset(path, model="temsirolimus")
    pd.testing.assert_frame_equal(a.records, b.records)
    assert b.endpoint_mapping == "the codes of model temsirolimus"


def test_fit_with_a_path_reads_the_models_codes(tmp_path):
    path = tmp_path / "dvid1.csv"
    path.write_text(DVID1)
    spec = prepare("one_cmt_oral", str(path))
    assert spec.endpoints == ["conc"]
    np.testing.assert_allclose(spec.obs_y, [2100, 1500, 1900, 1400])
    # a Dataset read without the model: the error says why and how
    with pytest.raises(FitError, match=r"default temsirolimus DVID codes.*model='one_cmt_oral'"):
        prepare("one_cmt_oral", pkpd.read_dataset(path))


# -- units -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "unit, target, factor",
    [
        ("mg/L", "ng/mL", 1000.0),
        ("ng/mL", "mg/L", 0.001),
        ("ug/L", "ng/mL", 1.0),
        ("\u00b5g/L", "ng/mL", 1.0),
        ("mcg/mL", "ng/mL", 1000.0),
        ("ng/L", "ng/mL", 0.001),
        ("pg/mL", "ng/mL", 0.001),
        ("g/L", "ng/mL", 1e6),
        ("mg/mL", "ng/mL", 1e6),
        ("mg/dL", "ng/mL", 1e4),
        ("MG/L", "ng/mL", 1000.0),
        ("ng/mL", "pg/mL", 1000.0),
        ("%", "% of baseline", 1.0),
    ],
)
def test_unit_factors(unit, target, factor):
    assert unit_factor(unit, target) == pytest.approx(factor, rel=1e-12)


def test_molar_units_need_a_molar_mass():
    assert unit_factor("nmol/L", "ng/mL", 914.2) == pytest.approx(0.9142)
    assert unit_factor("\u00b5M", "ng/mL", 232.2) == pytest.approx(232.2)
    with pytest.raises(ValueError, match="molar mass"):
        unit_factor("nmol/L", "ng/mL")
    with pytest.raises(ValueError, match="cannot be converted"):
        unit_factor("mg/L", "%")
    with pytest.raises(ValueError, match="unknown unit 'mg'"):
        unit_factor("mg", "ng/mL")


def test_dvu_column_converts_dv_and_lloq_per_record_and_keeps_the_originals():
    text = (
        "ID,TIME,AMT,DV,LLOQ,DVU\n"
        "1,0,25,.,.,.\n"
        "1,1,.,17.3,0.5,mg/L\n"
        "1,2,.,450,10,\u00b5g/L\n"
        "1,3,.,12000,.,pg/mL\n"
        "1,4,.,300,.,.\n"
        "1,5,.,0.3,0.5,mg/L\n"
    )
    ds = read(text, model="one_cmt_oral", dv_units={"conc": "ng/mL"})
    obs = ds.records[ds.records["EVID"] == 0]
    np.testing.assert_allclose(obs["DV"].tolist(), [17300.0, 450.0, 12.0, 300.0, 300.0])
    np.testing.assert_allclose(obs["LLOQ"].tolist(), [500.0, 10.0, np.nan, np.nan, 500.0])
    np.testing.assert_allclose(obs["DV_ORIG"].tolist()[:4], [17.3, 450, 12000, 300])
    np.testing.assert_allclose(obs["LLOQ_ORIG"].tolist()[:2], [0.5, 10])
    assert obs["DVU_ORIG"].tolist() == ["mg/L", "\u00b5g/L", "pg/mL", "ng/mL", "mg/L"]
    assert obs["DVU"].tolist() == ["ng/mL"] * 5
    assert obs["BLQ"].tolist() == [False, False, False, False, True]
    text_out = ds.summary_text()
    assert "DV units: conc: 2 records converted from mg/L to ng/mL (\u00d7 1000)" in text_out
    assert "below LLOQ (censored, M3): 1" in text_out
    assert "1 record converted from pg/mL to ng/mL (\u00d7 0.001)" in text_out
    assert ds.summary()["dv_conversions"]["conc"]["mg/L"] == 2


def test_dv_units_option_and_molar_units():
    ds = read(DVID1.replace("2100", "2.1"), model="one_cmt_oral", dv_units={"conc": "ug/mL"})
    np.testing.assert_allclose(ds.records["DV"].dropna(), [2100, 1.5e6, 1.9e6, 1.4e6])
    # the temsirolimus model knows the molar mass of sirolimus (914.2 g/mol)
    text = "ID,TIME,EVID,AMT,DUR,DVID,DV,DVU\n1,0,1,25,0.5,.,.,.\n1,24,0,.,.,2,10,nmol/L\n"
    ds = read(text, model="temsirolimus")
    assert ds.records["DV"].iloc[1] == pytest.approx(9.142)
    # a generic model needs it given
    ds = read(text, model="one_cmt_oral", molar_mass={"conc": 232.2})
    assert ds.records["DV"].iloc[1] == pytest.approx(2.322)


def test_unit_problems_are_listed_with_line_column_and_value():
    text = (
        "ID,TIME,AMT,DVID,DV,DVU\n"
        "1,0,25,.,.,.\n"
        "1,1,.,1,17.3,mg/Liter\n"
        "1,2,.,1,4,nmol/L\n"
        "1,3,.,3,80,mg/L\n"
        "1,4,.,2,40,ng/mL\n"
    )
    with pytest.raises(DatasetError) as info:
        read(text)
    got = [(p.line, p.column, p.value) for p in info.value.problems]
    assert got == [(3, "DVU", "mg/Liter"), (4, "DVU", "nmol/L"), (5, "DVU", "mg/L")]
    msgs = [p.message for p in info.value.problems]
    assert msgs[0].startswith("unknown DV unit; expected a concentration")
    assert "needs the molar mass" in msgs[1] and "--molar-mass temsirolimus=" in msgs[1]
    assert "mg/L is a mass concentration and cannot be converted to % of baseline" in msgs[2]


def test_bad_dv_units_arguments():
    with pytest.raises(DatasetError, match=r"names endpoint 'cp'.*conc=mg/L"):
        read(DVID1, model="one_cmt_oral", dv_units={"cp": "mg/L"})
    with pytest.raises(DatasetError, match=r"unknown unit 'mgl' for endpoint 'conc'"):
        read(DVID1, model="one_cmt_oral", dv_units={"conc": "mgl"})
    with pytest.raises(DatasetError, match=r"needs the molar mass"):
        read(DVID1, model="one_cmt_oral", dv_units={"conc": "nM"})


# -- the pre-fit unit check --------------------------------------------------------------------


def test_phenobarbital_in_mg_per_l_warns_without_dvu_and_converts_with_it(tmp_path, monkeypatch):
    df = phenobarbital()
    path = tmp_path / "pheno.csv"
    df.to_csv(path, index=False)

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):  # the fit stops right after its checks
        raise Stop

    monkeypatch.setattr(fit_module, "check_saveable", stop)
    # (a) DV in mg/L read as ng/mL: the fit warns, naming the likely unit
    with pytest.warns(DataUnitWarning) as record, pytest.raises(Stop):
        pkpd.fit("one_cmt_iv", str(path), method="map")
    (w,) = record
    message = str(w.message)
    assert "not in ng/mL" in message and "data in mg/L (= \u00b5g/mL) read as ng/mL" in message
    assert "L per kg of body weight (WT)" in message and "--dv-unit conc=mg/L" in message
    # (b) with DVU=mg/L: DV x 1000 and no warning
    df["DVU"] = np.where(df["EVID"] == 0, "mg/L", ".")
    df.to_csv(path, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataUnitWarning)
        with pytest.raises(Stop):
            pkpd.fit("one_cmt_iv", str(path), method="map")
    ds = pkpd.read_dataset(path, model="one_cmt_iv")
    obs = ds.records["EVID"] == 0
    dv_in = pd.to_numeric(df.loc[df["EVID"] == 0, "DV"]).to_numpy()
    np.testing.assert_allclose(ds.records.loc[obs, "DV"], dv_in * 1000)


def test_unit_check_by_the_priors_volume_alone():
    """Without a weight column: the data-implied volume against the priors' typical v."""
    df = phenobarbital().drop(columns="WT")
    # 40x the doses at the same concentrations (mg/L): adult-sized, V about 40-140 L
    df["AMT"] = pd.to_numeric(df["AMT"], errors="coerce") * 40  # NaN: missing
    model = load_model("one_cmt_iv")
    typical = load_priors(model=model).typical()
    ds = pkpd.read_dataset(df, model=model)
    message = concentration_scale_warning(model, ds, typical)
    assert message is not None and "the priors' typical v (50 L)" in message
    assert "mg/L" in message
    ds = pkpd.read_dataset(df, model=model, dv_units={"conc": "mg/L"})
    assert concentration_scale_warning(model, ds, typical) is None


def test_no_unit_warning_on_data_in_the_models_unit():
    path = dataset_path("temsirolimus_small")
    model = load_model("temsirolimus")
    ds = pkpd.read_dataset(path, model=model)
    assert concentration_scale_warning(model, ds, load_priors(model=model).typical()) is None
    one = load_model("one_cmt_oral")
    ds = read(DVID1, model=one)
    assert concentration_scale_warning(one, ds, load_priors(model=one).typical()) is None


def test_pg_per_ml_data_read_as_ng_per_ml_warn_the_other_way():
    df = phenobarbital()
    df["DV"] = pd.to_numeric(df["DV"], errors="coerce") * 1e6  # mg/L -> pg/mL
    model = load_model("one_cmt_iv")
    ds = pkpd.read_dataset(df, model=model)  # NaN: missing
    message = concentration_scale_warning(model, ds, load_priors(model=model).typical())
    assert message is not None and "pg/mL (= ng/L) read as ng/mL" in message


# -- the command line ------------------------------------------------------------------------


@pytest.fixture
def dvid1(tmp_path):
    path = tmp_path / "dvid1.csv"
    path.write_text(DVID1)
    return path


def test_validate_with_and_without_a_model(dvid1, capsys):
    assert main(["validate", str(dvid1)]) == 0
    out = capsys.readouterr().out
    assert "endpoints: DVID 1 \u2192 temsirolimus (ng/mL) [pkpd's default temsirolimus" in out
    assert main(["validate", str(dvid1), "--model", "one_cmt_oral"]) == 0
    out = capsys.readouterr().out
    assert "endpoints: DVID 1 \u2192 conc (ng/mL) [model one_cmt_oral predicts one" in out
    assert main(["validate", str(dvid1), "--dvid", "1=conc"]) == 0
    assert "DVID 1 \u2192 conc (ng/mL) [as mapped" in capsys.readouterr().out


def test_validate_dv_unit_and_unit_warning(tmp_path, capsys):
    path = tmp_path / "pheno.csv"
    phenobarbital().to_csv(path, index=False)
    assert main(["validate", str(path), "--model", "one_cmt_iv"]) == 0
    captured = capsys.readouterr()
    assert "DV units: conc: 36 records taken as ng/mL (no DVU, no --dv-unit)" in captured.out
    assert captured.err.startswith("WARNING: the observations of conc look like")
    assert main(["validate", str(path), "--model", "one_cmt_iv", "--dv-unit", "conc=mg/L"]) == 0
    captured = capsys.readouterr()
    assert "DV units: conc: 36 records converted from mg/L to ng/mL (\u00d7 1000)" in captured.out
    assert captured.err == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dvid", "1conc"], "--dvid '1conc': expected CODE=ENDPOINT"),
        (["--dvid", "one=conc"], "'one' is not a whole-number DVID code"),
        (["--dvid", "1=conc,1=pca"], "--dvid maps code 1 twice"),
        (["--dv-unit", "mg/L"], "--dv-unit 'mg/L': expected ENDPOINT=UNIT"),
        (["--molar-mass", "conc=heavy"], "'heavy' is not a number"),
        (["--model", "nope"], "unknown model 'nope'"),
    ],
)
def test_validate_bad_options_exit_2(dvid1, argv, message, capsys):
    assert main(["validate", str(dvid1), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_validate_bad_dvu_cell_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("ID,TIME,AMT,DV,DVU\n1,0,25,.,.\n1,1,.,17.3,mg/Liter\n")
    assert main(["validate", str(path)]) == 2
    assert "line 3, column DVU, value 'mg/Liter': unknown DV unit" in capsys.readouterr().err


def test_predict_maps_codes_and_converts_units(tmp_path, capsys):
    data = tmp_path / "two.csv"
    data.write_text(TWO_CODES)
    out = tmp_path / "pred.csv"
    base = ["predict", str(data), "--model", "one_cmt_iv", "--params", "cl=1,v=50"]
    assert main([*base, "--out", str(out)]) == 2
    assert "--dvid 1=conc,2=NAME" in capsys.readouterr().err
    assert main([*base, "--dvid", "1=conc,2=pca", "--out", str(out)]) == 0
    pred = pd.read_csv(out, dtype={"DVID": str})
    expected = 1000 * 100 / 50 * np.exp(-1 / 50 * np.array([1.0, 4.0]))
    np.testing.assert_allclose(pred.loc[pred["DVID"] == "1", "PRED"], expected, rtol=1e-6)
    assert pred.loc[pred["DVID"] == "2", "PRED"].isna().all()  # pca: not predicted by the model


def test_fit_prints_the_unit_warning_before_fitting(tmp_path, monkeypatch, capsys):
    path = tmp_path / "pheno.csv"
    phenobarbital().to_csv(path, index=False)

    def stop(*args, **kwargs):
        raise FitError("stopped after the checks")

    monkeypatch.setattr(fit_module, "check_saveable", stop)
    argv = ["fit", str(path), "--model", "one_cmt_iv", "--method", "map", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "fit.nc")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("WARNING: the observations of conc look like they are not in ng/mL")
    assert err.rstrip().endswith("stopped after the checks")


def test_fit_reads_with_dvid_and_dv_unit(tmp_path, capsys):
    """`pkpd fit --dvid 3=conc --dv-unit conc=mg/L`: the MAP fit of mg/L data finds V in L."""
    df = phenobarbital(n=10)
    df.insert(4, "DVID", np.where(df["EVID"] == 0, "3", "."))
    path = tmp_path / "pheno.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "fit.nc"
    argv = ["fit", str(path), "--model", "one_cmt_iv", "--method", "map", "--draws", "20",
            "--quiet", "--out", str(out), "--dvid", "3=conc", "--dv-unit", "conc=mg/L"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "WARNING" not in captured.err
    idata = pkpd.load_fit(out)
    v = float(np.median(idata.posterior["pop_v"].values))
    wt = df.groupby("ID")["WT"].first()
    assert 0.5 * wt.median() < v < 2 * wt.median()  # V = 1 L/kg x weight, not 1000x
