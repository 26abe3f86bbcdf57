"""Fuzz: on arbitrary tables the reader returns a Dataset or raises DatasetError, nothing else."""

from __future__ import annotations

import io

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pkpd
from pkpd.data import DatasetError

KNOWN = [
    "ID", "TIME", "EVID", "AMT", "RATE", "DUR", "CMT", "II", "ADDL", "SS", "DV", "MDV", "LLOQ",
    "BLQ", "DVID", "ENDPOINT", "STUDY", "AMTU", "BSA", "WT", "C",
]  # fmt: skip

cell = st.one_of(
    st.integers(-3, 5).map(str),
    st.sampled_from([".", "", "0", "1", "2", "24", "100", "-1", "-2", "1e3", "nan", "inf", "NA",
                     "C", "#", "mg", "mg/m2", "x", "1.5", "0.5", "temsirolimus", "vegf", "A"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=4),
)  # fmt: skip
header = st.lists(
    st.one_of(st.sampled_from(KNOWN), st.sampled_from(KNOWN).map(str.lower), st.text(max_size=3)),
    min_size=1,
    max_size=9,
)


def _exercise(ds):
    ds.summary()
    ds.summary_text()
    ds.to_arrays()
    ds.to_arrays(prediction_rows="all")


def test_missing_id_with_a_covariate_column_is_reported_not_raised():
    """Found by the fuzz test below (a KeyError): a record whose ID is missing, in a table
    with a covariate column, is reported as a dataset problem."""
    text = "EVID,AMT,RATE,DUR,CMT,II,0,TIME,ID\n0,0,0,0,0,0,.,0,.\n"
    try:
        pkpd.read_dataset(io.StringIO(text))
    except DatasetError as err:
        assert "ID" in str(err)
    else:  # pragma: no cover - the record has no ID
        raise AssertionError("a record without an ID was accepted")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=header, data=st.data())
def test_reader_raises_only_dataset_error_on_arbitrary_tables(header, data):
    n_rows = data.draw(st.integers(0, 8))
    rows = [
        data.draw(st.lists(cell, min_size=len(header), max_size=len(header))) for _ in range(n_rows)
    ]
    # as a DataFrame
    frame = pd.DataFrame(rows, columns=range(len(header)))
    frame.columns = (
        header if len(set(header)) == len(header) else [f"{h}{i}" for i, h in enumerate(header)]
    )
    for source in (frame,):
        try:
            _exercise(pkpd.read_dataset(source))
        except DatasetError:
            pass
    # as CSV text (cells may contain commas, quotes, newlines: the reader must cope)
    text = "\n".join(",".join(r) for r in [header] + rows)
    try:
        _exercise(pkpd.read_dataset(io.StringIO(text)))
    except DatasetError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_reader_raises_only_dataset_error_on_arbitrary_text(text):
    try:
        _exercise(pkpd.read_dataset(io.StringIO(text)))
    except DatasetError:
        pass


num = st.sampled_from([".", "0", "1", "2", "3", "24", "100", "0.5", "-1", "-2", "7"])


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    extra=st.lists(st.sampled_from(["RATE", "DUR", "II", "ADDL", "SS", "CMT", "MDV", "LLOQ", "BLQ",
                                    "DVID", "STUDY", "BSA", "EVID"]), unique=True, max_size=8),
)  # fmt: skip
def test_reader_on_nearly_valid_tables(data, extra):
    """Mostly well-formed event tables, so the success path (events, arrays) is fuzzed too."""
    cols = ["ID", "TIME", "AMT", "DV"] + extra
    n = data.draw(st.integers(1, 12))
    ids = sorted(data.draw(st.lists(st.sampled_from(["1", "2", "3"]), min_size=n, max_size=n)))
    rows = []
    t = {"1": 0.0, "2": 0.0, "3": 0.0}
    for i in ids:
        t[i] += data.draw(st.sampled_from([0.0, 0.5, 1.0, 24.0]))
        row = {"ID": i, "TIME": str(t[i])}
        for c in cols[2:]:
            row[c] = data.draw(num)
        rows.append(row)
    text = ",".join(cols) + "\n" + "\n".join(",".join(r[c] for c in cols) for r in rows)
    try:
        _exercise(pkpd.read_dataset(io.StringIO(text)))
        ok = True
    except DatasetError:
        ok = False
    from hypothesis import event

    event(f"valid={ok}")
