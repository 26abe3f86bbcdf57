"""Fuzzing at the process boundary: whole files and whole command lines through ``pkpd.cli.main``.

Every run must end in exit 0 with every line of the file accounted for (a record, the header,
a listed comment line or a blank line), or in exit 2 with a located message; never a traceback,
and never more memory than a bounded allowance (``RLIMIT_AS`` raised by 2 GiB over what the
process already holds, restored afterwards).
"""

from __future__ import annotations

import re

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pkpd
from pkpd.cli import main
from pkpd.data import DatasetError

from memory_limits import memory_allowance

HEADER = ["ID", "TIME", "EVID", "AMT", "DV", "WT", "LAG"]
ROWS = [
    ["1", "0", "1", "100", ".", "70", "0.5"],
    ["1", "1", "0", "0", "3.1", "70", "0.5"],
    ["1", "4", "0", "0", "2.2", "70", "0.5"],
    ["2", "0", "1", "100", ".", "60", "0"],
    ["2", "2", "0", "0", "4.0", "60", "0"],
]
TOKENS = [
    ".", "", "0", "-1", "2", "1e3", "1_0", "\u0661", "\uff11", "inf", "-inf", "nan", "1e400",
    "CHN-001", "C01", "#1", "C", "c", "\x1b[31mred", "\x0c", "1.50", "1.5", "100000000", '"',
    "'", "mg/m2", "\u00e9", "<b>", " ", "3", "4", "-2", "0.5",
]  # fmt: skip
LINES = ["C a comment", "# a comment", "", "\x0c", "C\x0cform feed", "\x1b[2J", "1,2", ",,,,,,",
         "CHN-001,0,1,100,.,70,0", "C01,1,0,0,3.0,70,0"]  # fmt: skip
PARAMS = [
    "cl=1,v=20,ka=1", "cl=1,v=20,ka=1,lag_depot=LAG", "cl=WT,v=20,ka=1", "cl=1,v=0,ka=1",
    "cl=1,v=20,ka=1,f_depot=-0.5", "cl=1,v=20", "cl=1,v=20,ka=1,lag_depot=NOPE",
]  # fmt: skip

mutation = st.one_of(
    st.tuples(st.just("cell"), st.integers(0, len(ROWS) - 1), st.integers(0, len(HEADER) - 1),
              st.sampled_from(TOKENS)),
    st.tuples(st.just("line"), st.integers(0, len(ROWS)), st.sampled_from(LINES)),
    st.tuples(st.just("text"), st.integers(0, len(ROWS)), st.text(max_size=12)),
)  # fmt: skip


@st.composite
def files(draw):
    rows = [list(r) for r in ROWS]
    extra: dict[int, list[str]] = {}
    for m in draw(st.lists(mutation, max_size=5)):
        if m[0] == "cell":
            rows[m[1]][m[2]] = m[3]
        else:
            extra.setdefault(m[1], []).append(m[2])
    sep = draw(st.sampled_from([",", ",", "\t", " "]))
    trailing = draw(st.sampled_from(["", "", ","]))
    lines = [sep.join(HEADER)]
    for i, r in enumerate(rows):
        lines += extra.get(i, [])
        lines.append(sep.join(r) + trailing)
    lines += extra.get(len(rows), [])
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(lines) + newline
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace")


LOCATED = re.compile(r"line \d+|row \d+|column|header|file|parameter|--params|model")


def _check_exit(rc, err):
    assert "Traceback" not in err
    assert rc in (0, 2), err
    if rc == 2:
        assert err.strip(), "exit 2 without a message"
        assert LOCATED.search(err), f"exit 2 without saying where: {err[:500]}"
    assert len(err) < 200_000, "unbounded error output"


def _accounted(path, raw: bytes):
    """Every non-blank line is the header, a record, or a listed comment line."""
    ds = pkpd.read_dataset(path)
    text = raw.decode("utf-8-sig") if not raw.startswith((b"\xff\xfe", b"\xfe\xff")) else None
    if text is None:
        return ds
    lines = re.split(r"\r\n|\r|\n", text)  # the reader's line breaks only
    numbered = [i for i, line in enumerate(lines, 1) if line.strip()]
    records = set(ds.records["LINE"].astype(int))
    comments = set(ds.comment_lines)
    header = [i for i in numbered if i not in records and i not in comments]
    assert len(header) == 1, f"lines neither records nor listed comments: {header}"
    assert len(ds.records) + len(comments & set(numbered)) + 1 == len(numbered)
    return ds


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(
    raw=files(), params=st.sampled_from(PARAMS), command=st.sampled_from(["validate", "predict"])
)
def test_validate_and_predict_on_mutated_files(tmp_path, capsys, raw, params, command):
    path = tmp_path / "data.csv"
    path.write_bytes(raw)
    out = tmp_path / "pred.csv"
    out.unlink(missing_ok=True)
    argv = ["validate", str(path)]
    if command == "predict":
        argv = ["predict", str(path), "--model", "one_cmt_oral", "--params", params,
                "--out", str(out)]  # fmt: skip
    with memory_allowance():
        rc = main(argv)
    err = capsys.readouterr().err
    _check_exit(rc, err)
    assert path.read_bytes() == raw  # the input is never touched
    if rc == 0:
        try:
            ds = _accounted(path, raw)
        except DatasetError as e:  # pragma: no cover - main said it was fine
            pytest.fail(f"exit 0 but the file does not read: {e}")
        if command == "predict":
            pred = pd.read_csv(out, dtype=str, keep_default_na=False)
            assert len(pred) == len(ds.records)
    elif command == "predict":
        assert not out.exists()


# -- a corpus of adversarial command lines for the costly commands ---------------------------------


@pytest.fixture(scope="module")
def fit_file(tmp_path_factory):
    from pkpd.inference.fit import save_fit
    from pkpd.simulate import fit_from_values

    rows = []
    for i in range(6):
        rows.append(dict(ID=i + 1, TIME=0.0, EVID=1, AMT=100.0, DV=float("nan"), WT=60.0 + 4 * i))
        rows += [dict(ID=i + 1, TIME=t, EVID=0, AMT=0.0, DV=2.0, WT=60.0 + 4 * i)
                 for t in (1.0, 4.0, 12.0)]  # fmt: skip
    fit = fit_from_values("one_cmt_iv", pd.DataFrame(rows), {"cl": 2.0, "v": 30.0},
                          omega={"cl": 0.3, "v": 0.2}, n_draws=8, uncertainty=0.1, seed=1)  # fmt: skip
    path = tmp_path_factory.mktemp("fit") / "fit.nc"
    save_fit(fit, path)
    return path


SIMULATE_CASES = {
    "no dose left": ["--regimen", "25 mg q1w x1, hold dose 1"],
    "huge count": ["--regimen", "25 mg q1w x100000000000000000000"],
    "empty regimen": ["--regimen", ""],
    "escape sequence": ["--regimen", "\x1b[31m25 mg q1w x2"],
    "hold outside": ["--regimen", "25 mg q1w x2, hold week 9"],
    "negative horizon": ["--regimen", "25 mg q1w x2", "--horizon-h=-1"],
    "huge horizon": ["--regimen", "25 mg q1w x2", "--horizon-h", "1e300"],
    "nan horizon": ["--regimen", "25 mg q1w x2", "--horizon-h", "nan"],
    "unknown study": ["--regimen", "25 mg q1w x2", "--study", "nope"],
    "unknown endpoint": ["--regimen", "25 mg q1w x2", "--endpoint", "nope"],
    "bad target": ["--regimen", "25 mg q1w x2", "--target", "auc >>> 3"],
    "bad covariate": ["--regimen", "25 mg q1w x2", "--covariate", "WT=normal(1"],
    "missing population": ["--regimen", "25 mg q1w x2", "--population", "missing.csv"],
    "fine": ["--regimen", "100 mg q12h x3", "--subjects", "3", "--draws", "2"],
}


@pytest.mark.parametrize("case", list(SIMULATE_CASES))
def test_simulate_adversarial_command_lines(fit_file, tmp_path, capsys, monkeypatch, case):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "sim.nc"
    with memory_allowance():
        rc = main(["simulate", str(fit_file), *SIMULATE_CASES[case], "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and rc in (0, 2), err
    if case == "fine":
        assert rc == 0 and out.exists()
    else:
        assert rc == 2 and err.strip() and not out.exists(), err
        assert "\x1b" not in err  # terminal escapes are not echoed raw


def test_report_adversarial_command_lines(fit_file, tmp_path, capsys):
    out = tmp_path / "r.html"
    not_sim = tmp_path / "not_sim.nc"
    not_sim.write_text("ID,TIME\n")
    for argv in (["--target", "x >= 1"], ["--sim", str(not_sim)], ["--sim", str(fit_file)]):
        with memory_allowance():
            rc = main(["report", str(fit_file), *argv, "--quiet", "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err and err.strip(), (argv, err)
        assert not out.exists()


FIT_FILES = {
    "text ids starting with C": "ID,TIME,EVID,AMT,DV\nCHN-001,0,1,100,.\nCHN-001,1,0,0,3\n"
    "CHN-001,4,0,0,2\nC02,0,1,100,.\nC02,2,0,0,2.5\nC02,6,0,0,1.5\n",
    "huge ADDL": "ID,TIME,EVID,AMT,II,ADDL,DV\n1,0,1,100,1,100000000,.\n1,1,0,0,.,.,3\n",
    "DVID inf": "ID,TIME,EVID,AMT,DVID,DV\n1,0,1,100,.,.\n1,1,0,0,inf,3\n",
    "trailing comma": "ID,TIME,EVID,AMT,DV\n1,0,1,100,.,\n1,1,0,0,3,\n",
}


@pytest.mark.parametrize("case", list(FIT_FILES))
def test_fit_map_adversarial_files(tmp_path, capsys, case):
    data = tmp_path / "data.csv"
    data.write_text(FIT_FILES[case])
    out = tmp_path / "fit.nc"
    with memory_allowance():
        rc = main(["fit", str(data), "--model", "one_cmt_iv", "--method", "map", "--quiet",
                   "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    _check_exit(rc, err)
    if case == "text ids starting with C":
        assert rc == 0, err
        fit = pkpd.load_fit(out)
        assert sorted(map(str, fit.posterior["subject"].values)) == ["C02", "CHN-001"]
    else:
        assert rc == 2 and re.search(r"line \d+", err), err
