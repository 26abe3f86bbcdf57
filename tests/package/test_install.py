"""pkpd outside its checkout: the wheel carries the priors and datasets, the distribution has a
name of its own, ``import pkpd`` and ``pkpd --help``/``validate`` do not start JAX, the
installed ``pkpd`` command runs a quick fit with bundled priors, a simulation and the
report, and float64 is on (or its absence refused with a clear error)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pkpd

from paths import ROOT

DEPS = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "jax").is_dir())


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JAX_ENABLE_X64")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (a build writes into its source folder)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nc")
    for name in ("pkpd", "priors", "datasets"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), "."],
        cwd=src,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A new venv with the wheel installed and no access to the checkout; the dependencies
    (JAX, NumPyro, ...) come from this test run's environment through a ``.pth`` line, which
    does not run that environment's editable-install hook."""
    env_dir = tmp_path_factory.mktemp("venv") / "env"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "_pkpd_test_deps.pth").write_text(str(DEPS) + "\n")
    proc = subprocess.run(
        [py, "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
        capture_output=True,
        text=True,
        env=_clean_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return env_dir


def _run(env_dir: Path, args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=_clean_env(**env))


def test_the_wheel_has_a_free_name_and_carries_priors_and_datasets(wheel):
    # "pkpd" on the public index is an unrelated project; the import name stays pkpd
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["name"] == "pkpd-jax"
    assert wheel.name.startswith("pkpd_jax-")
    names = set(zipfile.ZipFile(wheel).namelist())
    for toml in (ROOT / "priors").glob("*.toml"):
        assert f"pkpd/_bundled/priors/{toml.name}" in names, toml.name
    for data in list((ROOT / "datasets").glob("*/*.csv")) + list(
        (ROOT / "datasets").glob("*/*.json")
    ):
        rel = data.relative_to(ROOT / "datasets").as_posix()
        assert f"pkpd/_bundled/datasets/{rel}" in names, rel
    assert "pkpd/cli.py" in names


def test_installed_wheel_works_outside_the_checkout(installed, tmp_path):
    py = installed / "bin" / "python"
    code = (
        "import sys, json, pkpd\n"
        "assert 'jax' not in sys.modules, 'import pkpd started JAX'\n"
        "ds, truth = pkpd.datasets.load('temsirolimus_small')\n"
        "pri = pkpd.load_priors(model='temsirolimus')\n"
        "import jax\n"
        "print(json.dumps(dict(file=pkpd.__file__, n=int(ds.records.ID.nunique()),"
        " rows=len(ds.records), cl=pri.typical()['cl'], x64=bool(jax.config.jax_enable_x64),"
        " truth_cl=truth['typical']['cl'], csv=str(pkpd.datasets.path('temsirolimus_small')))))\n"
    )
    proc = _run(installed, [str(py), "-c", code], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(got["file"]).is_relative_to(installed), got["file"]  # not the checkout
    assert Path(got["csv"]).is_relative_to(installed), got["csv"]
    # the same numbers as the repository's own files, read here without pkpd
    raw = pd.read_csv(ROOT / "datasets" / "temsirolimus" / "temsirolimus_small.csv", comment="#")
    assert (got["n"], got["rows"]) == (raw.ID.nunique(), len(raw))
    toml = tomllib.loads((ROOT / "priors" / "temsirolimus.toml").read_text())
    assert got["cl"] == pytest.approx(toml["parameters"]["cl"]["prior"]["median"])
    assert got["x64"] is True

    # the command: --help and validate without JAX, then a quick fit of the bundled model
    pkpd_cmd = str(installed / "bin" / "pkpd")
    proc = _run(installed, [pkpd_cmd, "--help"], tmp_path)
    assert proc.returncode == 0 and "validate" in proc.stdout, proc.stderr
    proc = _run(installed, [pkpd_cmd, "validate", got["csv"]], tmp_path)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr
    # the pipeline from the installed command, on a small one-compartment study with the
    # bundled one_cmt_iv priors: a quick fit, a simulation and the report (its figures, styles
    # and scripts come from the wheel). `pkpd demo --quick` runs the same steps on the
    # temsirolimus model; its ~5 minutes of compilation under the suite's load were this
    # test's cost, and the notebooks test runs that model's fit, simulation and report.
    rows = ["ID,TIME,EVID,AMT,DV,WT"]
    rng = np.random.default_rng(3)
    for i in range(1, 7):
        cl, v = 2.0 * np.exp(0.3 * rng.normal()), 30.0 * np.exp(0.2 * rng.normal())
        rows.append(f"{i},0,1,100,.,70")
        for t in (0.5, 2.0, 6.0, 12.0, 24.0):
            c = 1000 * 100 / v * np.exp(-cl / v * t) * np.exp(0.1 * rng.normal())
            rows.append(f"{i},{t},0,0,{c:.4g},70")
    data = tmp_path / "study.csv"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    steps = [
        ["fit", str(data), "--model", "one_cmt_iv", "--method", "map", "--draws", "40",
         "--out", str(out / "fit.nc")],
        ["simulate", str(out / "fit.nc"), "--regimen", "100 mg q12h x3", "--subjects", "20",
         "--draws", "10", "--out", str(out / "sim.nc")],
        ["report", str(out / "fit.nc"), "--sim", str(out / "sim.nc"), "--replicates", "20",
         "--out", str(out / "REPORT.html")],
    ]  # fmt: skip
    for args in steps:
        proc = _run(installed, [pkpd_cmd, *args], tmp_path)
        assert proc.returncode == 0, args[0] + proc.stdout[-2000:] + proc.stderr[-3000:]
    for name in ("fit.nc", "sim.nc", "REPORT.html"):
        assert (out / name).stat().st_size > 0, name
    fit = pkpd.load_fit(out / "fit.nc")
    assert fit.attrs["model"] == "one_cmt_iv"
    # the bundled priors the installed command used are the repository's file
    toml = tomllib.loads((ROOT / "priors" / "one_cmt_iv.toml").read_text())
    assert json.loads(fit.attrs["priors_json"])["parameters"]["cl"] == toml["parameters"]["cl"]
    assert Path(fit.attrs["priors_source"]).is_relative_to(installed), fit.attrs["priors_source"]
    # 6 subjects, CL ~2 L/h: the quick fit is in the right place
    assert 1.0 < float(np.median(fit.posterior["pop_cl"].values)) < 4.0
    html = (out / "REPORT.html").read_text()
    assert "one_cmt_iv" in html and html.count("data:image/") >= 3


def test_float64_off_is_refused_with_a_clear_error(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("ID,TIME,EVID,AMT,DV\n1,0,1,100,.\n1,1,0,0,4.5\n1,4,0,0,2.0\n")
    code = (
        "import pkpd\n"
        f"ds = pkpd.read_dataset({str(csv)!r})\n"
        "try:\n"
        "    pkpd.fit('one_cmt_iv', ds, method='map', draws=10, progress_bar=False)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_clean_env(JAX_ENABLE_X64="0", PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("Float64Off"), proc.stdout
    assert "jax_enable_x64" in proc.stdout and "float64" in proc.stdout


def test_validate_and_help_do_not_import_jax(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("ID,TIME,EVID,AMT,DV\n1,0,1,100,.\n1,1,0,0,4.5\n")
    code = (
        "import sys\n"
        "from pkpd.cli import main\n"
        "for argv in (['validate', sys.argv[1]],):\n"
        "    assert main(argv) == 0\n"
        "print('JAX', 'jax' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(csv)],
        capture_output=True,
        text=True,
        env=_clean_env(PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("JAX False"), proc.stdout
