"""The input and output contract of every command: inputs never overwritten, outputs checked
before the work and written atomically, Ctrl-C without a traceback, bounded arguments."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

import pkpd.inference.fit as fit_module
from pkpd.cli import main

DATA = "ID,TIME,EVID,AMT,DV,LAG\n1,0,1,100,.,0.5\n1,1,0,0,1,0.5\n2,0,1,100,.,-1\n2,1,0,0,1,-1\n"


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text(DATA)
    return path


@pytest.fixture
def no_fit(monkeypatch):
    """Any call of the fitting function fails the test: the checks must come before it."""

    def boom(*args, **kwargs):
        raise AssertionError("the fit started although its output could not be written")

    monkeypatch.setattr(fit_module, "fit", boom)


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_predict_refuses_to_overwrite_its_input(data, capsys):
    before = data.read_bytes()
    rc = main(["predict", str(data), "--model", "one_cmt_oral", "--params", "cl=1,v=20,ka=1",
               "--out", str(data)])  # fmt: skip
    assert rc == 2
    assert "is the data file" in capsys.readouterr().err
    assert data.read_bytes() == before


def test_predict_refuses_a_link_to_its_input(data, tmp_path, capsys):
    link = tmp_path / "link.csv"
    link.symlink_to(data)
    before = data.read_bytes()
    rc = main(["predict", str(data), "--model", "one_cmt_oral", "--params", "cl=1,v=20,ka=1",
               "--out", str(link)])  # fmt: skip
    assert rc == 2
    assert "is the data file" in capsys.readouterr().err
    assert data.read_bytes() == before and link.is_symlink()


def test_fit_refuses_data_or_priors_as_output_before_fitting(data, tmp_path, no_fit, capsys):
    before = data.read_bytes()
    assert main(["fit", str(data), "--model", "one_cmt_oral", "--out", str(data)]) == 2
    assert "is the data file" in capsys.readouterr().err
    assert data.read_bytes() == before
    priors = tmp_path / "p.toml"
    priors.write_text("# priors\n")
    assert main(["fit", str(data), "--model", "one_cmt_oral", "--priors", str(priors),
                 "--out", str(priors)]) == 2  # fmt: skip
    assert "is the --priors file" in capsys.readouterr().err
    assert priors.read_text() == "# priors\n"


def test_fit_learns_its_output_cannot_be_written_before_sampling(data, tmp_path, no_fit, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc = main(["fit", str(data), "--model", "one_cmt_oral", "--out", str(blocker / "fit.nc")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "pkpd fit: --out" in err and "is not a folder" in err
    folder = tmp_path / "adir"
    folder.mkdir()
    assert main(["fit", str(data), "--model", "one_cmt_oral", "--out", str(folder)]) == 2
    assert "is a folder; expected a file path" in capsys.readouterr().err


def test_simulate_and_report_refuse_their_inputs_as_outputs(tmp_path, capsys):
    fit = tmp_path / "fit.nc"
    fit.write_bytes(b"not read: the check comes first")
    sim = tmp_path / "sim.nc"
    sim.write_bytes(b"also not read")
    rc = main(["simulate", str(fit), "--regimen", "25 mg q1w x2", "--out", str(fit)])
    assert rc == 2 and "is the fit file" in capsys.readouterr().err
    # the summary CSV beside --out would replace the population table
    pop = tmp_path / "sim.csv"
    pop.write_text("BSA\n1.8\n")
    rc = main(["simulate", str(fit), "--regimen", "25 mg q1w x2", "--population", str(pop),
               "--out", str(sim)])  # fmt: skip
    assert rc == 2 and "summary CSV" in capsys.readouterr().err
    assert pop.read_text() == "BSA\n1.8\n"
    for out in (fit, sim):
        rc = main(["report", str(fit), "--sim", str(sim), "--out", str(out)])
        assert rc == 2
    assert fit.read_bytes() == b"not read: the check comes first"
    assert sim.read_bytes() == b"also not read"


def test_predict_writes_atomically(data, tmp_path, monkeypatch):
    out = tmp_path / "pred.csv"
    out.write_text("previous results\n")

    def half_then_fail(self, path, *args, **kwargs):
        with open(path, "w") as fh:
            fh.write("ID,TIME\n1,")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_fail)
    rc = main(["predict", str(data), "--model", "one_cmt_oral", "--params", "cl=1,v=20,ka=1",
               "--out", str(out)])  # fmt: skip
    assert rc == 2
    assert out.read_text() == "previous results\n"
    assert _files(tmp_path) == ["data.csv", "pred.csv"]  # no temporary file left


def test_ctrl_c_during_a_fit_exits_130_with_one_line(data, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_module, "fit", interrupted)
    out = tmp_path / "fit.nc"
    assert main(["fit", str(data), "--model", "one_cmt_oral", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["pkpd fit: interrupted; no partial output was written"]
    assert not out.exists()
    assert _files(tmp_path) == ["data.csv"]


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "fit.nc", "--replicates", "-5", "--out", "r.html"],
        ["report", "fit.nc", "--replicates", "0", "--out", "r.html"],
        ["fit", "d.csv", "--model", "one_cmt_iv", "--chains", "0", "--out", "f.nc"],
        ["fit", "d.csv", "--model", "one_cmt_iv", "--draws", "-1", "--out", "f.nc"],
        ["simulate", "f.nc", "--regimen", "25 mg", "--subjects", "0", "--out", "s.nc"],
        ["simulate", "f.nc", "--regimen", "25 mg", "--draws", "x", "--out", "s.nc"],
    ],
)
def test_counts_must_be_positive(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "expected an integer >= 1" in err or "is not an integer" in err


@pytest.mark.parametrize(
    ("times", "message"),
    [
        ("0:2016:0.0001", "20,160,001 time points, more than the limit of 100,000"),
        ("0:1e300:1", "more than the limit"),
        ("0:inf:1", "times must be finite"),
        ("0,nan", "times must be finite"),
        ("-24,0,24", "times must be >= 0 h"),
        ("24:0:1", "STOP >= START"),
    ],
)
def test_simulate_times_are_bounded_and_checked(tmp_path, times, message, capsys):
    fit = tmp_path / "fit.nc"
    fit.write_bytes(b"x")
    rc = main(["simulate", str(fit), "--regimen", "25 mg q1w x2", f"--times={times}",
               "--out", str(tmp_path / "s.nc")])  # fmt: skip
    assert rc == 2
    assert message in capsys.readouterr().err
    assert _files(tmp_path) == ["fit.nc"]


def test_max_times_raises_the_bound():
    from pkpd.cli import _parse_times

    assert len(_parse_times("0:10:0.001", 20_000)) == 10_001
    with pytest.raises(ValueError, match="limit of 10,000"):
        _parse_times("0:10:0.001", 10_000)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("cl=-2,v=20,ka=1", "parameter cl = -2 for subject(s) 1, 2; expected > 0 L/h"),
        ("cl=1,v=0,ka=1", "parameter v = 0 for subject(s) 1, 2; expected > 0 L"),
        ("cl=1,v=20,ka=0", "parameter ka = 0 for subject(s) 1, 2; expected > 0 1/h"),
        ("cl=1,v=20,ka=1,f_depot=-0.5", "f_depot = -0.5 for subject(s) 1, 2; expected in [0, 1]"),
        ("cl=1,v=20,ka=1,f_depot=1.2", "f_depot = 1.2 for subject(s) 1, 2; expected in [0, 1]"),
        ("cl=1,v=20,ka=1,lag_depot=-1", "lag_depot = -1 for subject(s) 1, 2; expected >= 0 h"),
        ("cl=1,v=20,ka=1,lag_depot=LAG", "lag_depot (column 'LAG') = -1 for subject(s) 2;"),
    ],
)
def test_predict_refuses_parameters_outside_their_domain(data, tmp_path, params, message, capsys):
    out = tmp_path / "pred.csv"
    rc = main(["predict", str(data), "--model", "one_cmt_oral", "--params", params,
               "--out", str(out)])  # fmt: skip
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_predict_relative_f_when_allowed(data, tmp_path):
    out = tmp_path / "pred.csv"
    args = ["predict", str(data), "--model", "one_cmt_oral", "--out", str(out), "--params"]
    assert main([*args, "cl=1,v=20,ka=1,f_depot=1.2", "--allow-f-above-1"]) == 0
    high = pd.read_csv(out)["PRED"].to_numpy()
    assert main([*args, "cl=1,v=20,ka=1,f_depot=1"]) == 0
    base = pd.read_csv(out)["PRED"].to_numpy()
    # dose-linear: F = 1.2 scales every concentration by 1.2
    assert high[1] == pytest.approx(1.2 * base[1], rel=1e-9)


def test_no_write_probe_is_left_behind(data, tmp_path):
    out = tmp_path / "sub" / "pred.csv"
    assert main(["predict", str(data), "--model", "one_cmt_oral", "--params", "cl=1,v=20,ka=1",
                 "--out", str(out)]) == 0  # fmt: skip
    assert _files(out.parent) == ["pred.csv"]
    assert not any(n.startswith(".pkpd-write-check") for n in os.listdir(tmp_path))


def test_fit_names_the_missing_modelled_duration(tmp_path, capsys):
    data = tmp_path / "rate2.csv"
    data.write_text("ID,TIME,EVID,AMT,RATE,DV\n1,0,1,100,-2,.\n1,1,0,0,0,10\n1,4,0,0,0,5\n")
    out = tmp_path / "fit.nc"
    rc = main(["fit", str(data), "--model", "one_cmt_iv", "--method", "map", "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "RATE=-2 into compartment 1 (central) need the parameter dur_central" in err
    assert "no starting point" not in err and not out.exists()


def test_predict_rows_stay_aligned_with_a_form_feed_in_a_comment(tmp_path):
    # pandas splits lines at \f; the reader does not: every PRED was shifted by one row
    data = tmp_path / "ff.csv"
    data.write_text("ID,TIME,EVID,AMT,DV\nC note\x0cwith a form feed\n1,0,1,100,.\n1,1,0,0,3\n"
                    "1,10,0,0,1\n")  # fmt: skip
    out = tmp_path / "pred.csv"
    assert main(["predict", str(data), "--model", "one_cmt_iv", "--params", "cl=2,v=20",
                 "--out", str(out)]) == 0  # fmt: skip
    pred = pd.read_csv(out)
    assert pred["TIME"].tolist() == [0, 1, 10]
    # 100 mg / 20 L = 5 mg/L = 5000 ng/mL, k = 0.1/h
    expected = [5000.0, 5000.0 * np.exp(-0.1), 5000.0 * np.exp(-1.0)]
    np.testing.assert_allclose(pred["PRED"], expected, rtol=1e-9)


def test_fit_error_model_and_target_accept_from_the_command_line(tmp_path, monkeypatch):
    from pkpd.inference.priors import Priors

    seen = {}

    def record(model, data, priors, **kwargs):
        seen.update(priors=priors, **kwargs)
        raise KeyboardInterrupt  # stop before any work: only the arguments matter here

    monkeypatch.setattr(fit_module, "fit", record)
    data = tmp_path / "d.csv"
    data.write_text(DATA)
    rc = main(["fit", str(data), "--model", "one_cmt_oral", "--error", "conc=proportional",
               "--target-accept", "0.9", "--out", str(tmp_path / "f.nc")])  # fmt: skip
    assert rc == 130
    assert seen["target_accept"] == 0.9
    res = seen["priors"].residuals["conc"]
    assert isinstance(seen["priors"], Priors)
    # priors/one_cmt_oral.toml: combined, proportional HalfNormal(0.3) kept, additive dropped
    assert res.model == "proportional" and set(res.terms) == {"proportional"}
    assert res.terms["proportional"].params == {"scale": 0.3}
    assert seen["priors"].raw["residual"]["conc"]["model"] == "proportional"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--error", "conc=quadratic"], "residual model 'quadratic' for 'conc'"),
        (["--error", "pca=proportional"], "no residual error entry for endpoint 'pca'"),
        (["--error", "conc"], "expected ENDPOINT=MODEL"),
    ],
)
def test_fit_bad_error_model_exits_2(tmp_path, argv, message, no_fit, capsys):
    data = tmp_path / "d.csv"
    data.write_text(DATA)
    rc = main(["fit", str(data), "--model", "one_cmt_oral", *argv, "--out", str(tmp_path / "f.nc")])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_fit_target_accept_must_be_a_probability(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "d.csv", "--model", "one_cmt_iv", "--target-accept", "1.5", "--out", "f.nc"])
    assert e.value.code == 2 and "expected 0 < value < 1" in capsys.readouterr().err


def test_fit_names_observations_predicted_as_zero_under_a_lognormal_error(tmp_path, capsys):
    # a sample at the dose time of an oral dose: the prediction is 0 and its log -inf; the fit
    # gave a residual SD several times too large and divergences without naming the record
    data = tmp_path / "zero.csv"
    data.write_text("ID,TIME,EVID,AMT,DV\n1,0,1,100,.\n1,0,0,0,0.5\n1,1,0,0,3000\n1,4,0,0,2500\n"
                    "2,0,1,100,.\n2,1,0,0,2800\n2,4,0,0,2600\n")  # fmt: skip
    out = tmp_path / "fit.nc"
    argv = ["fit", str(data), "--model", "one_cmt_oral", "--method", "map", "--out", str(out)]
    assert main([*argv, "--error", "conc=lognormal"]) == 2
    err = capsys.readouterr().err
    assert "predicts 0 at 1 observation(s) (data line(s) 3;" in err and not out.exists()
