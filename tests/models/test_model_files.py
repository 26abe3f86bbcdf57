"""A model from a Python file (``--model mydrug.py``, ``load_model("mydrug.py")``): fitted,
stored with its source, and simulated later from the fit file alone in a new process without
the file; errors in the file named with its line."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.models import MODELS, load_model
from pkpd.models.files import SOURCES, ModelFileError

MODEL_FILE = '''"""My drug: one compartment, first-order absorption (the library's linear model)."""
from pkpd.models import LinearPKModel

model = LinearPKModel("my_one_cmt_oral", 1, True)
'''

PRIORS = """
[model]
name = "my_one_cmt_oral"

[parameters.cl]
unit = "L/h"
prior = { family = "lognormal", median = 4.0, sd_log = 0.5 }
bsv = { family = "halfnormal", scale = 0.3 }

[parameters.v]
unit = "L"
prior = { family = "lognormal", median = 40.0, sd_log = 0.5 }

[parameters.ka]
unit = "1/h"
prior = { family = "lognormal", median = 1.0, sd_log = 0.5 }

[residual.conc]
model = "proportional"
unit = "ng/mL"
proportional = { family = "halfnormal", scale = 0.3 }
"""


def data(n=8, seed=1):
    """100 mg oral doses; concentrations from the Bateman function with CL varying."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        cl, v, ka = 4.0 * np.exp(rng.normal(0, 0.3)), 40.0, 1.0
        rows.append(dict(ID=i + 1, TIME=0.0, EVID=1, AMT=100.0, DV=np.nan))
        for t in (0.5, 1, 2, 4, 8, 12, 24):
            k = cl / v
            c = 1000 * 100 * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))
            rows.append(dict(ID=i + 1, TIME=t, EVID=0, AMT=0.0, DV=c * np.exp(rng.normal(0, 0.1))))
    return pd.DataFrame(rows)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "mydrug.py").write_text(MODEL_FILE)
    (tmp_path / "priors.toml").write_text(PRIORS)
    data().to_csv(tmp_path / "d.csv", index=False)
    yield tmp_path
    MODELS.pop("my_one_cmt_oral", None)
    SOURCES.pop("my_one_cmt_oral", None)


def test_a_model_file_is_fitted_and_its_fit_simulates_without_the_file(files):
    from pkpd.cli import main

    out = files / "fit.nc"
    args = ["fit", str(files / "d.csv"), "--model", str(files / "mydrug.py"), "--priors"]
    assert main(args + [str(files / "priors.toml"), "--method", "map", "--out", str(out)]) == 0
    fit = pkpd.load_fit(out)
    assert fit.attrs["model"] == "my_one_cmt_oral"
    assert fit.attrs["model_source"] == MODEL_FILE
    assert fit.attrs["model_source_sha256"] == hashlib.sha256(MODEL_FILE.encode()).hexdigest()
    (files / "mydrug.py").unlink()
    # a new process, which has never seen the file: the fit file alone rebuilds the model
    sim = files / "sim.nc"
    r = subprocess.run(
        [sys.executable, "-m", "pkpd.cli", "simulate", str(out), "--regimen", "100 mg once",
         "--subjects", "3", "--draws", "2", "--times", "0,2,24", "--out", str(sim),
         "--quiet"],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    import xarray as xr

    with xr.open_dataset(sim) as ds:
        conc = ds["conc"].values[0]
        cl, v, ka = (ds[f"param_{p}"].values for p in ("cl", "v", "ka"))
    k = cl / v
    want = 1000 * 100 * ka / (v * (ka - k)) * (np.exp(-k * 2.0) - np.exp(-ka * 2.0))
    np.testing.assert_allclose(conc[:, :, 1], want, rtol=1e-9)


def test_load_model_takes_a_file_or_a_module_attribute(files, monkeypatch):
    m = load_model(str(files / "mydrug.py"))
    assert m.name == "my_one_cmt_oral" and load_model("my_one_cmt_oral") is m
    assert load_model(f"{files / 'mydrug.py'}:model").name == "my_one_cmt_oral"
    monkeypatch.syspath_prepend(str(files))
    assert load_model("mydrug:model").name == "my_one_cmt_oral"


@pytest.mark.parametrize(
    "text, message",
    [
        ("model = (\n", "line 1: syntax error"),
        ("x = 1\nraise RuntimeError('no data here')\n", "line 2: RuntimeError: no data here"),
        ("x = 1\n", "defines no pkpd model at top level"),
        (
            MODEL_FILE + "other = LinearPKModel('b', 1, False)\n",
            "defines several models (model, other); say which one",
        ),
        (MODEL_FILE.replace("my_one_cmt_oral", "one_cmt_oral"), "the name of a bundled pkpd"),
    ],
)
def test_a_bad_model_file_is_named_with_its_line(tmp_path, text, message):
    path = tmp_path / "bad.py"
    path.write_text(text)
    with pytest.raises(ModelFileError, match="bad.py") as err:
        load_model(str(path))
    assert message in str(err.value)


def test_cli_reports_a_missing_model_file_without_a_traceback(tmp_path):
    data().to_csv(tmp_path / "d.csv", index=False)
    r = subprocess.run(
        [sys.executable, "-m", "pkpd.cli", "fit", str(tmp_path / "d.csv"), "--model",
         str(tmp_path / "nothere.py"), "--out", str(tmp_path / "f.nc")],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert r.returncode == 2
    assert "model file" in r.stderr and "nothere.py does not exist" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_readme_model_file_loads(tmp_path):
    from paths import ROOT

    text = (ROOT / "README.md").read_text()
    block = text[text.index("**A model in a file.**") :].split("```python\n", 1)[1]
    (tmp_path / "mydrug.py").write_text(block.split("```", 1)[0])
    try:
        m = load_model(str(tmp_path / "mydrug.py"))
        assert m.name == "mydrug" and m.endpoints == ("conc",)
        assert m.parameters == {"ka": "1/h", "cl": "L/h", "v": "L"}
    finally:
        MODELS.pop("mydrug", None)
        SOURCES.pop("mydrug", None)


DECLARED = MODEL_FILE.replace(
    'model = LinearPKModel("my_one_cmt_oral", 1, True)',
    """class Declared(LinearPKModel):
    @property
    def default_priors(self):
        return {
            "model": {"name": self.name},
            "parameters": {
                "cl": {"unit": "L/h", "prior": {"family": "lognormal", "median": 4.0,
                                                 "sd_log": 0.5},
                       "bsv": {"family": "halfnormal", "scale": 0.3},
                       "source": "my review, table 2"},
                "v": {"unit": "L", "prior": {"family": "lognormal", "median": 40.0,
                                              "sd_log": 0.5}, "source": "my review"},
                "ka": {"unit": "1/h", "prior": {"family": "lognormal", "median": 1.0,
                                                 "sd_log": 0.5}, "source": "my review"},
            },
            "residual": {"conc": {"model": "proportional", "unit": "ng/mL",
                                  "proportional": {"family": "halfnormal", "scale": 0.3}}},
        }


import jax

jax.tree_util.register_static(Declared)
model = Declared("my_one_cmt_oral", 1, True)""",
)


def test_priors_command_writes_a_models_declared_priors_and_a_fit_uses_them(files, capsys):
    import tomllib

    from pkpd.cli import main
    from pkpd.inference.priors import load_priors
    from pkpd.inference.spec import prepare

    (files / "mydrug.py").write_text(DECLARED)
    model = load_model(str(files / "mydrug.py"))
    # no priors file: the fit takes the model's declarations
    spec = prepare(model, data())
    assert spec.priors.source == "the declarations of model 'my_one_cmt_oral'"
    assert spec.priors.parameters["cl"].source == "my review, table 2"
    assert (
        main(["priors", "--model", str(files / "mydrug.py"), "--out", str(files / "p.toml")]) == 0
    )
    assert "the priors model 'my_one_cmt_oral' declares" in capsys.readouterr().out
    written = tomllib.loads((files / "p.toml").read_text())
    assert written == model.default_priors
    assert load_priors(files / "p.toml", model=model).parameters["v"].prior.params["median"] == 40.0


def test_priors_command_writes_a_template_for_a_model_without_priors(files):
    import tomllib

    from pkpd.cli import main
    from pkpd.inference.priors import load_priors

    out = files / "template.toml"
    assert main(["priors", "--model", str(files / "mydrug.py"), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Priors of model 'my_one_cmt_oral': a TEMPLATE.")
    pri = load_priors(out, model=load_model("my_one_cmt_oral"))  # valid as it stands
    assert set(pri.parameters) == {"cl", "v", "ka"} and set(pri.residuals) == {"conc"}
    raw = tomllib.loads(text)
    assert all(e["assumption"] is True for e in raw["parameters"].values())
    assert raw["parameters"]["cl"]["unit"] == "L/h"
    # the output is never an input
    assert (
        main(["priors", "--model", str(files / "mydrug.py"), "--out", str(files / "mydrug.py")])
        == 2
    )
    assert (files / "mydrug.py").read_text() == MODEL_FILE


def test_an_unchanged_model_file_runs_once(files):
    """The CLI, the fit and its priors each load the model: the file itself runs once."""
    runs = files / "runs.txt"
    text = f"open({str(runs)!r}, 'a').write('ran\\n')\n" + MODEL_FILE
    (files / "mydrug.py").write_text(text)
    first = load_model(str(files / "mydrug.py"))
    assert load_model(str(files / "mydrug.py")) is first
    assert runs.read_text() == "ran\n"
    (files / "mydrug.py").write_text(text + "# edited\n")  # a changed file runs again
    load_model(str(files / "mydrug.py"))
    assert runs.read_text() == "ran\nran\n"
