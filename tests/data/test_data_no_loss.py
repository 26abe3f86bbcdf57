"""Issue 28: nothing in a data file is dropped, merged or echoed silently.

Comment lines cannot swallow records with text IDs, numeric IDs compare as numbers, numbers follow
one strict grammar, contradictions and oversized ADDL are located problems, long problem lists are
summarised, and :meth:`Dataset.input_table` gives the records exactly as the reader split them.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

import pkpd
from pkpd.data import DatasetError
from pkpd.data.errors import MAX_PROBLEMS_SHOWN_PER_KIND
from pkpd.data.reader import MAX_IMPLIED_DOSES_PER_RECORD, MAX_IMPLIED_DOSES_PER_SUBJECT

from memory_limits import memory_allowance


def read_text(text: str, **kw) -> pkpd.Dataset:
    return pkpd.read_dataset(io.StringIO(text), **kw)


def problems_of(text: str, **kw) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        read_text(text, **kw)
    return info.value


def assert_every_line_accounted_for(text: str, ds: pkpd.Dataset, header_line: int = 1):
    """Each non-blank line is the header, a record or a listed comment line: none is lost."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    nonblank = {i for i, line in enumerate(lines, start=1) if line.strip()}
    used = set(ds.records["LINE"].tolist()) | set(ds.comment_lines) | {header_line}
    assert used == nonblank


# -- comments cannot swallow data ------------------------------------------------------------


def _text_id_file():
    rows = ["ID,TIME,AMT,DV"]
    for k in range(1, 9):
        sid = f"CHN-{k:03d}" if k % 2 else f"C{k}"
        rows += [f"{sid},0,25,.", f"{sid},1,.,{k}.5", f"{sid},2,.,{k}.1"]
    return "\n".join(rows) + "\n"


def test_text_ids_starting_with_c_are_records_not_comments():
    text = _text_id_file()
    ds = read_text(text)
    assert len(ds.records) == 24
    assert ds.n_subjects == 8
    assert ds.subjects[:2] == ("CHN-001", "C2")
    assert ds.comment_lines == ()
    assert_every_line_accounted_for(text, ds)


def test_nonmem_comments_stay_comments_next_to_text_ids():
    text = (
        "ID,TIME,AMT,DV\n"  # 1
        "C this is a note, with a comma\n"  # 2: a note (2 fields, not 4)
        "CHN-001,0,25,.\n"  # 3
        "C,CHN-001,1,3\n"  # 4: first field exactly C
        "# a hash comment\n"  # 5
        "CHN-001,1,.,3\n"  # 6
        "  C indented note\n"  # 7
        "Cmt,2,3\n"  # 8: 3 fields
        "C note, 1, 2, 3\n"  # 9: a note with the header's number of fields: "C" and a blank
    )
    ds = read_text(text)
    assert ds.records["LINE"].tolist() == [3, 6]
    assert ds.comment_lines == (2, 4, 5, 7, 8, 9)
    assert ds.subjects == ("CHN-001",)
    assert "comment lines skipped: 6 (lines 2, 4-5, 7-9)" in ds.summary_text()
    assert_every_line_accounted_for(text, ds)


def test_c_comment_column_first_marks_comments_as_nonmem_does():
    text = (
        "C,ID,TIME,AMT,DV\n"
        ".,CHN-001,0,25,.\n"
        "C,CHN-001,0.5,.,9\n"  # commented-out record
        "Cx,CHN-001,0.7,.,9\n"  # anything starting with C in the comment column
        ",CHN-001,1,.,3\n"
    )
    ds = read_text(text)
    assert ds.records["LINE"].tolist() == [2, 5]
    assert ds.comment_lines == (3, 4)
    assert ds.covariates == ()


def test_whitespace_file_with_text_ids_and_notes():
    text = "ID TIME AMT DV\nC note about the study\nCHN-1 0 25 .\nCHN-1 1 . 3\nC 1 2 . 4\n"
    ds = read_text(text)
    assert ds.records["LINE"].tolist() == [3, 4]
    assert ds.comment_lines == (2, 5)


def test_first_column_numeric_c_line_is_a_comment():
    # TIME first: a value starting with C cannot be a number, so the line is a comment.
    ds = read_text("TIME,ID,AMT,DV\n0,1,10,.\nCheck,1,.,3\n1,1,.,4\n")
    assert ds.records["LINE"].tolist() == [2, 4] and ds.comment_lines == (3,)


def test_ignore_option_overrides_the_guess():
    text = "ID,TIME,AMT,DV\n@ note\n#7,0,10,.\n#7,1,.,3\nCHN-1,0,10,.\nCHN-1,2,.,4\n"
    ds = read_text(text, ignore="@")
    assert ds.comment_lines == (2,)
    assert ds.subjects == ("#7", "CHN-1") and len(ds.records) == 4
    ds_c = read_text(text.replace("@ note", "C note"), ignore="C")
    assert ds_c.comment_lines == (2, 5, 6) and ds_c.subjects == ("#7",)
    # NONMEM's IGNORE=C with a header whose first column is C: the header is still the header.
    ds_h = read_text("C,ID,TIME,DV\n.,1,0,3\nC,1,1,4\n", ignore="C")
    assert ds_h.records["LINE"].tolist() == [2] and ds_h.comment_lines == (3,)
    # Explicit '#': a C column value is no longer a comment mark.
    ds_hash = read_text("ID,C,TIME,DV\n1,.,0,3\n1,C,1,4\n", ignore="#")
    assert ds_hash.records["LINE"].tolist() == [2, 3]
    for bad in ("", "ab", " "):
        err = problems_of("ID,TIME\n1,0\n", ignore=bad)
        assert "argument ignore=" in str(err)


def test_ignore_on_dataframe_marks_rows():
    df = pd.DataFrame({"ID": ["@x", "1", "1"], "TIME": [0, 0, 1], "DV": [".", "3", "4"]})
    ds = pkpd.read_dataset(df, ignore="@")
    assert ds.comment_lines == (1,) and ds.records["LINE"].tolist() == [2, 3]


def test_summary_lists_every_comment_line_as_ranges():
    body = "".join("# c\n" if k % 10 < 3 else f"1,{k},.,1\n" for k in range(60))
    text = "ID,TIME,AMT,DV\n1,0,5,.\n" + body
    ds = read_text(text)
    assert len(ds.comment_lines) == 18
    want = "lines 3-5, 13-15, 23-25, 33-35, 43-45, 53-55"
    assert f"comment lines skipped: 18 ({want})" in ds.summary_text()


# -- IDs and numbers -------------------------------------------------------------------------


def test_numeric_ids_compare_as_numbers():
    text = (
        "ID,TIME,AMT,DV\n"
        "1,0,10,.\n1.0,1,.,3\n01,2,.,4\n+1,3,.,5\n"
        "1.5,0,10,.\n1.50,1,.,3\n"
        "CHN-1,0,10,.\nCHN-1,1,.,2\n"
    )
    ds = read_text(text)
    assert ds.subjects == ("1", "1.5", "CHN-1")
    assert ds.records["ID"].tolist() == ["1"] * 4 + ["1.5"] * 2 + ["CHN-1"] * 2


def test_ids_1_5_and_1_50_split_apart_is_one_subject_seen_twice():
    err = problems_of("ID,TIME,AMT,DV\n1.5,0,10,.\n2,0,10,.\n1.50,1,.,3\n")
    (p,) = err.problems
    assert (p.line, p.column) == (4, "ID")
    assert "subject 1.5 appears again" in p.message


def test_strict_number_grammar_for_ids():
    # Python's float() reads these as numbers; they are text IDs here, distinct from 100 and 1.
    text = "ID,TIME,AMT,DV\n1_0_0,0,10,.\n100,0,10,.\n١,0,10,.\n１,0,10,.\n1,0,10,.\n"
    ds = read_text(text)
    assert ds.subjects == ("1_0_0", "100", "١", "１", "1")


def test_strict_number_grammar_for_values_and_inf_text():
    err = problems_of(
        "ID,TIME,AMT,DV,MDV\n1,0,1_000,.,1\n1,1,.,١٢,0\n1,2,.,inf,0\n1,-Infinity,.,3,0\n"
        "1,3,.,1e999,0\n1,4,.,nan,1\n1,5,.,1.5e-3,0\n"
    )
    got = [(p.line, p.column, p.value, p.message.split(";")[0]) for p in err.problems]
    assert got == [
        (2, "AMT", "1_000", "not a number"),
        (3, "DV", "١٢", "not a number"),
        (4, "DV", "inf", "not finite"),
        (5, "TIME", "-Infinity", "not finite"),
        (6, "DV", "1e999", "not finite"),
    ]


def test_dvid_inf_is_a_located_problem_not_a_traceback():
    err = problems_of("ID,TIME,AMT,DVID,DV\n1,0,10,.,.\n1,1,.,inf,3\n1,2,.,1e400,3\n")
    assert [(p.line, p.column, p.value) for p in err.problems] == [
        (3, "DVID", "inf"),
        (4, "DVID", "1e400"),
    ]


# -- contradictions ----------------------------------------------------------------------------


def test_blq_flag_contradicting_dv_and_lloq():
    err = problems_of(
        "ID,TIME,EVID,AMT,DV,LLOQ,BLQ\n1,0,1,10,.,.,1\n1,1,0,.,250,0.5,1\n1,2,0,.,0.5,0.5,1\n"
    )
    got = [(p.line, p.column, p.value) for p in err.problems]
    assert got == [(2, "BLQ", "1"), (3, "DV", "250")]
    assert "BLQ=1 on a dose record (EVID 1)" in err.problems[0].message
    assert "BLQ=1 but DV is above LLOQ (0.5)" in err.problems[1].message


def test_dose_only_columns_without_evid_column_default_evid():
    # No EVID column: a record with RATE but no AMT is an observation; its RATE would be lost.
    err = problems_of("ID,TIME,AMT,RATE,DV\n1,0,10,.,.\n1,1,.,5,3\n")
    (p,) = err.problems
    assert (p.line, p.column, p.value) == (3, "RATE", "5")
    # Blank EVID with SS=1, AMT 0 and RATE > 0 is a steady-state infusion, as without EVID.
    ds = read_text("ID,TIME,EVID,AMT,RATE,SS,DV\n1,0,.,0,5,1,.\n1,1,0,.,.,.,3\n")
    assert ds.records["EVID"].tolist() == [1, 0]


# -- bounds ------------------------------------------------------------------------------------


def test_addl_bound_per_record_is_checked_before_expansion():
    assert MAX_IMPLIED_DOSES_PER_RECORD == 10_000
    text = "ID,TIME,AMT,II,ADDL,DV\n1,0,10,24,100000000,.\n1,1,.,.,.,5\n"
    # expanding 10^8 doses would need ~100 GB: under a cap of the process's size + 1 GiB the
    # problem comes back only if nothing was expanded (a wall-time bound would be flaky)
    with memory_allowance(2**30):
        err = problems_of(text)
    (p,) = err.problems
    assert (p.line, p.column, p.value) == (2, "ADDL", "100000000")
    assert "max_implied_doses" in p.message
    ok = read_text(text.replace("100000000", "20000"), max_implied_doses=20_000)
    assert len(ok.events()) == 20_001
    assert problems_of(text.replace("100000000", "10001")).problems[0].line == 2
    assert len(read_text(text.replace("100000000", "10000")).events()) == 10_001


def test_addl_bound_per_subject():
    assert MAX_IMPLIED_DOSES_PER_SUBJECT == 100_000
    text = (
        "ID,TIME,AMT,II,ADDL,DV\n"
        "1,0,10,1,4,.\n1,10,10,1,4,.\n1,20,10,1,4,.\n1,30,.,.,.,5\n"
        "2,0,10,1,9,.\n2,30,.,.,.,5\n"
    )
    err = problems_of(text, max_implied_doses_per_subject=9)
    (p,) = err.problems
    assert (p.line, p.column, p.value) == (4, "ADDL", "4")
    assert "subject 1's ADDL values imply more than 9" in p.message
    assert len(read_text(text, max_implied_doses_per_subject=12).events()) == 3 + 12 + 1 + 9


def test_problem_list_is_summarised_per_kind_and_kept_whole():
    n = 10_000
    text = "ID,TIME,AMT,DV\n" + "".join(f"1,x{k},1,1\n" for k in range(n))
    err = problems_of(text)
    assert len(err.problems) == n
    s = str(err)
    assert s.splitlines()[0] == "10,000 problems in dataset:"
    assert s.count("not a number") == MAX_PROBLEMS_SHOWN_PER_KIND + 1
    assert "... and 9,980 more problems of this kind (lines 22-10001): column TIME" in s
    assert len(s) < 5_000
    assert len(err.render(None).splitlines()) == n + 1
    assert str(problems_of(text, max_problems_shown=None)).count("not a number") == n
    err3 = problems_of(text, max_problems_shown=3)
    assert "... and 9,997 more problems of this kind" in str(err3)


def test_several_kinds_are_each_summarised():
    rows = "".join(f"1,{k},-1,1\n1,{k}.5,.,y\n" for k in range(30))
    err = problems_of("ID,TIME,AMT,DV\n" + rows)
    s = str(err)
    assert "... and 10 more problems of this kind (lines 42-60): column AMT" in s
    assert "... and 10 more problems of this kind (lines 43-61): column DV" in s


# -- when nothing survives, say why -------------------------------------------------------------


def test_trailing_delimiter_on_every_row_shows_the_line_problems():
    err = problems_of("ID,TIME,AMT,DV\n1,0,10,.,\n1,1,.,3,\n")
    lines = [p.line for p in err.problems]
    assert lines == [None, 2, 3]
    assert "the line ends with ','" in err.problems[1].message
    assert "no data rows" in err.problems[0].message


def test_tab_data_under_comma_header_says_what_is_wrong():
    err = problems_of("ID,TIME,AMT,DV\n1\t0\t10\t.\n1\t1\t.\t3\n")
    assert "separated by commas: the file probably mixes delimiters" in str(err)


# -- encodings and control characters ---------------------------------------------------------


def test_latin1_file_gives_line_and_column(tmp_path):
    f = tmp_path / "latin1.csv"
    f.write_bytes("ID,TIME,AMT,DV,SITE\n1,0,10,.,1\n1,1,.,3,1\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DatasetError) as info:
        pkpd.read_dataset(f)
    (p,) = info.value.problems
    assert p.line == 4 and "byte(s) e9 at character 6" in p.message
    f.write_bytes("ID,TIME,AMT,DV,SITE\n1,0,10,.,M\u00fcnchen\n".encode("latin-1"))
    with pytest.raises(DatasetError) as info:
        pkpd.read_dataset(f)
    (p,) = info.value.problems
    assert (p.line, p.column) == (2, "SITE")


def test_utf16_with_bom_is_read_and_without_bom_is_named(tmp_path):
    text = "ID,TIME,AMT,DV\n1,0,10,.\n1,1,.,3\n"
    f = tmp_path / "u16.csv"
    f.write_bytes(text.encode("utf-16"))  # with BOM
    assert len(pkpd.read_dataset(f).records) == 2
    f.write_bytes(text.encode("utf-16-le"))
    with pytest.raises(DatasetError) as info:
        pkpd.read_dataset(f)
    assert str(info.value).endswith("the file looks like UTF-16 text (NUL bytes between the "
                                    "characters); save it as UTF-8 CSV")  # fmt: skip
    assert "\x00" not in str(info.value)


def test_control_characters_are_escaped_in_messages_and_summary():
    err = problems_of("ID,TIME,AMT,DV\n\x1b]0;pwned\x07,0,10,.\n2,\x1b[31mx,1,.\n")
    s = str(err)
    assert "\x1b" not in s and "\x07" not in s
    assert "\\x1b[31mx" in s
    ds = read_text("ID,STUDY,TIME,AMT,DV\n1,\x1b[2J,0,10,.\n1,\x1b[2J,1,.,3\n")
    out = ds.summary_text()
    assert "\x1b" not in out and "\\x1b[2J: 1" in out


# -- the input table, as the reader split it ----------------------------------------------------


@pytest.mark.parametrize("odd", ["\f", "\v", "\x1c", "\x85", "\u2028", "\x1e"])
def test_input_table_is_aligned_with_records_whatever_is_in_comments(odd):
    text = (
        "ID,Time,AMT,DV,wt\n"  # 1
        f"# a comment{odd}with an odd break\n"  # 2
        "1,0,10,.,70\n"  # 3
        f"C note{odd}1,5,.,9,70\n"  # 4
        "1,1.50,.,3.0,70\n"  # 5
        f"#{odd}\n"  # 6
        "2,0,20,.,80\n"  # 7
        "2,2,.,4,.\n"  # 8
    )
    ds = read_text(text)
    assert ds.records["LINE"].tolist() == [3, 5, 7, 8]
    assert ds.comment_lines == (2, 4, 6)
    tab = ds.input_table()
    assert list(tab.columns) == ["ID", "Time", "AMT", "DV", "wt"]
    assert tab.index.name == "LINE" and tab.index.tolist() == [3, 5, 7, 8]
    assert tab.to_numpy().tolist() == [
        ["1", "0", "10", ".", "70"],
        ["1", "1.50", ".", "3.0", "70"],
        ["2", "0", "20", ".", "80"],
        ["2", "2", ".", "4", "."],
    ]
    assert len(tab) == len(ds.records)


def test_input_table_crlf_whitespace_and_c_column_comments():
    text = "C ID TIME DV\r\n. 1 0 3\r\nC 1 1 4\r\n. 1 2 5\r\n"
    ds = read_text(text)
    tab = ds.input_table()
    assert tab.index.tolist() == ds.records["LINE"].tolist() == [2, 4]
    assert tab["DV"].tolist() == ["3", "5"] and list(tab.columns) == ["C", "ID", "TIME", "DV"]
    # rows whose C column marks them as comments (not the first column) are left out too
    ds2 = read_text("ID,C,TIME,DV\n1,.,0,3\n1,C,1,4\n1,.,2,5\n")
    assert ds2.input_table().index.tolist() == [2, 4] and ds2.comment_lines == (3,)


def test_input_table_for_dataframe_input_and_restored_datasets():
    df = pd.DataFrame({"id": [1, 1], "TIME": [0.0, 1.5], "AMT": [10, None], "DV": [np.nan, 2.0]})
    ds = pkpd.read_dataset(df)
    tab = ds.input_table()
    assert list(tab.columns) == ["id", "TIME", "AMT", "DV"]
    assert tab.index.tolist() == [1, 2]
    assert tab.to_numpy().tolist() == [["1", "0.0", "10.0", "."], ["1", "1.5", ".", "2.0"]]
    bare = pkpd.Dataset(records=ds.records, covariates=())
    with pytest.raises(ValueError, match="not built by pkpd.read_dataset"):
        bare.input_table()


def test_comment_before_a_tab_header_does_not_set_the_delimiter():
    text = "C study X, part 2\nID\tTIME\tAMT\tDV\n1\t0\t10\t.\n1\t1\t.\t3\n"
    ds = read_text(text)
    assert ds.comment_lines == (1,) and ds.records["LINE"].tolist() == [3, 4]
    assert list(ds.input_table().columns) == ["ID", "TIME", "AMT", "DV"]
