"""Column names netCDF cannot store, end to end: fit, save, load, simulate, report, CLI.

A covariate column may be named anything the data reader accepts (``CRCL_mL/min``, with a
space, in any script, with markup). The fit and simulation files store such names under
netCDF-safe names with the originals in attributes (:mod:`pkpd.inference.names`); reading them
back gives the original names; the report shows them HTML-escaped. Small MAP fits: seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.cli import main
from pkpd.inference.names import is_safe, safe_names
from pkpd.inference.posterior import data_columns, restore_dataset

# as written in the file; the reader upper-cases column names
COLUMNS = {"crcl": "CRCL_mL/min", "space": "Poids kg_é", "cjk": "体重", "html": "<b>WT</b>"}
STORED = {k: v.upper() for k, v in COLUMNS.items()}
STUDIES = ("S<1>", "S$\\bad$&2")  # markup, and text matplotlib would read as (bad) TeX
EXPRESSIONS = [
    "cl~CRCL_mL/min power",  # bare: any characters but spaces, parentheses, ~ and quotes
    "v~`Poids kg_é` power(ref=70)",  # a space: quoted
    "v~体重 power(ref=70, fixed=0.5)",
    "cl~<b>WT</b> power(ref=70)",
]


def _study_csv(path, n=8, seed=3):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        wt, crcl = float(rng.uniform(50, 100)), float(rng.uniform(40, 120))
        cl, v = 2.0 * (wt / 70) ** 0.75 * (crcl / 80) ** 0.5, 30.0
        cov = {
            COLUMNS["crcl"]: crcl,
            COLUMNS["space"]: wt,
            COLUMNS["cjk"]: wt,
            COLUMNS["html"]: wt,
            "STUDY": STUDIES[i % 2],
        }
        rows.append(dict(ID=f"<i>{i + 1}", TIME=0.0, EVID=1, AMT=100.0, DV=".", MDV=1, **cov))
        for t in (0.5, 2, 8, 24):
            c = 1000 * 100 / v * np.exp(-cl / v * t) * np.exp(rng.normal(0, 0.1))
            rows.append(dict(ID=f"<i>{i + 1}", TIME=t, EVID=0, AMT=0, DV=round(c, 3), MDV=0, **cov))
    pd.DataFrame(rows).to_csv(path, index=False, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    return _study_csv(tmp_path_factory.mktemp("data") / "study.csv")


@pytest.fixture(scope="module")
def saved(tmp_path_factory, csv):
    d = tmp_path_factory.mktemp("names")
    idata = pkpd.fit(
        "one_cmt_iv", csv, method="map", draws=20, seed=1, covariates=EXPRESSIONS,
        progress_bar=False,
    )  # fmt: skip
    path = pkpd.save_fit(idata, d / "fit.nc")
    return {"dir": d, "csv": csv, "fit": idata, "path": path, "loaded": pkpd.load_fit(path)}


def test_safe_names_are_safe_distinct_and_deterministic():
    names = ["WT", "CRCL_ML/MIN", "CRCL_ML_MIN", "CRCL ML MIN", "体重", "<B>WT</B>", "///"]
    out = safe_names(names)
    assert out == safe_names(list(reversed(names)))  # the same whatever the order
    assert out["WT"] == "WT" and out["CRCL_ML_MIN"] == "CRCL_ML_MIN"  # safe names kept
    assert len({s.lower() for s in out.values()}) == len(names)  # distinct, ignoring case
    assert all(is_safe("record_" + s) for s in out.values())


def test_fit_file_stores_safe_names_and_gives_the_originals_back(saved):
    for idata in (saved["fit"], saved["loaded"]):
        cd = idata.constant_data
        assert all(is_safe(v) for v in (*cd.data_vars, *idata.posterior.data_vars))
        cols = data_columns(idata)
        for original in STORED.values():
            (var,) = [k for k, c in cols.items() if c == original]
            assert cd[var].attrs["original_name"] == original
        assert [str(c) for c in cd["covariate"].values] == list(STORED.values())
        assert restore_dataset(idata).covariates == tuple(STORED.values())
        detail = json.loads(idata.attrs["covariate_effects_detail"])
        assert {e["covariate"] for e in detail} == set(STORED.values())
        assert [str(c) for c, _ in json.loads(idata.attrs["data_columns"])][-4:] == list(
            STORED.values()
        )
        beta = idata.posterior["beta_cl_crcl_ml_min"]
        assert beta.attrs["covariate"] == STORED["crcl"] and beta.attrs["parameter"] == "cl"
    assert "beta_v_u4f53_u91cd" not in saved["loaded"].posterior  # fixed effect: no draws
    # the fit's spec is rebuilt from the file alone, effects included
    from pkpd.inference.posterior import restore_spec

    spec = restore_spec(saved["loaded"])
    assert {e.covariate for e in spec.effects} == set(STORED.values())


def test_simulation_from_the_loaded_fit_resamples_by_original_name(saved, tmp_path):
    sim = pkpd.simulate(
        saved["path"], "100 mg q24h x 2", n_subjects=4, n_draws=3, progress_bar=False
    )
    for original in STORED.values():
        assert f"cov_{original}" in sim
    path = tmp_path / "sim.nc"
    pkpd.save_simulation(sim, path)
    import xarray as xr

    raw = xr.load_dataset(path)
    assert all(is_safe(v) for v in raw.variables)
    assert raw["cov_CRCL_ML_MIN"].attrs["original_name"] == STORED["crcl"]
    back = pkpd.load_simulation(path)
    for original in STORED.values():
        np.testing.assert_array_equal(back[f"cov_{original}"].values, sim[f"cov_{original}"].values)
    # a mapping population by the name as written in the data file
    again = pkpd.simulate(
        saved["path"], "100 mg once", n_subjects=3, n_draws=2, progress_bar=False,
        population={COLUMNS["crcl"]: 60.0},
    )  # fmt: skip
    assert np.all(again[f"cov_{STORED['crcl']}"].values == 60.0)


def test_report_shows_original_names_escaped(saved, tmp_path):
    out = pkpd.report(saved["path"], out=tmp_path / "report.html", n_replicates=5, seed=1)
    text = out.read_text(encoding="utf-8")
    assert "&lt;B&gt;WT&lt;/B&gt;" in text and "<B>WT</B>" not in text
    assert "CRCL_ML/MIN" in text and "体重" in text and "POIDS KG_É" in text
    assert "S&lt;1&gt;" in text and "<i>1" not in text
    assert "could not be produced" not in text  # the TeX-looking study name included


def test_grammar_quotes_and_errors():
    from pkpd.inference.covariates import CovariateSpecError, parse_expression

    cols = {"BODY WEIGHT (KG)": np.array([50.0, 70.0]), "A/B": np.array([1.0, 2.0])}
    for expr in ("cl~`Body weight (kg)` power", 'cl~"BODY WEIGHT (KG)"', "cl~'body weight (kg)'"):
        (eff,) = parse_expression(expr, parameters=["cl"], columns=cols)
        assert eff.covariate == "BODY WEIGHT (KG)" and eff.name == "cl_body_weight_kg"
    (eff,) = parse_expression("cl~a/b linear(ref=1)", parameters=["cl"], columns=cols)
    assert (eff.covariate, eff.name) == ("A/B", "cl_a_b")
    with pytest.raises(CovariateSpecError, match="quote"):
        parse_expression("cl~Body weight power", parameters=["cl"], columns=cols)


def test_priors_file_effect_names_must_be_safe():
    from pkpd.inference.priors import PriorsError, load_priors

    raw = {
        "covariates": {
            "cl/crcl": {
                "parameter": "cl",
                "covariate": "CRCL_mL/min",
                "form": "power",
                "reference": 80,
                "prior": {"family": "normal", "mean": 0, "sd": 1},
                "source": "test",
            }
        }
    }
    base = load_priors(model="one_cmt_iv").raw
    with pytest.raises(PriorsError, match="beta_<name>"):
        load_priors({**base, **raw}, model="one_cmt_iv")


@pytest.mark.parametrize("effect", [None, "cl~CRCL_mL/min power"])
def test_cli_fit_with_a_slash_covariate_writes_the_file(csv, tmp_path, capsys, effect):
    """The issue's case: the data validate, and the fit must not crash when saved (with the
    ``/`` column only carried in the records, or with an effect on it)."""
    out = tmp_path / "fit.nc"
    rc = main(
        ["fit", str(csv), "--model", "one_cmt_iv", "--method", "map", "--draws", "10", "--quiet",
         "--out", str(out)]
        + (["--covariate", effect] if effect else [])
    )  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0, text
    if effect:
        assert "covariate effect cl_crcl_ml_min: power of CRCL_ML/MIN on cl" in text
    back = pkpd.load_fit(out)
    assert STORED["crcl"] in restore_dataset(back).covariates
