import json

import pytest

from tuneforge.data.load import DataFileError, read_rows
from tuneforge.data.validate import DataValidationError, enforce_policy, load_validated

GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


def test_broken_file_names_each_line(tmp_path):
    lines = [json.dumps(GOOD), '{"messages": [', "[1,2]", "", json.dumps({"messages": []}), json.dumps(GOOD)]
    p = tmp_path / "d.jsonl"
    p.write_text("\n".join(lines) + "\n")
    data = load_validated(p)
    assert len(data.rows) == 2
    assert [(pr.line, pr.code) for pr in data.problems] == [
        (2, "invalid_json"),
        (3, "not_an_object"),
        (5, "empty_messages"),
    ]
    assert [r["_line"] for r in data.rows] == [1, 6]


def test_bom_crlf_nul_bad_utf8_surrogate(tmp_path):
    good = json.dumps(GOOD).encode()
    raw = (
        b"\xef\xbb\xbf"
        + good
        + b"\r\n"
        + good.replace(b'"q"', b'"q\x00"')
        + b"\r\n"
        + good.replace(b'"q"', b'"\xff\xfe"')
        + b"\n"
        + good.replace(b'"q"', b'"\\ud800"')
        + b"\n"
        + good
        + b"\r\n"
    )
    p = tmp_path / "d.jsonl"
    p.write_bytes(raw)
    data = load_validated(p)
    assert [r["_line"] for r in data.rows] == [1, 5]
    assert [(pr.line, pr.code) for pr in data.problems] == [(2, "nul_byte"), (3, "invalid_utf8"), (4, "invalid_utf8")]


def test_huge_line_is_refused_with_cap(tmp_path, monkeypatch):
    import tuneforge.data.load as load

    monkeypatch.setattr(load, "MAX_LINE_BYTES", 1000)
    p = tmp_path / "d.jsonl"
    big = {"messages": [{"role": "user", "content": "x" * 5000}, {"role": "assistant", "content": "a"}]}
    p.write_text(json.dumps(big) + "\n" + json.dumps(GOOD) + "\n")
    data = load_validated(p)
    assert data.problems[0].code == "line_too_long" and data.problems[0].line == 1 and len(data.rows) == 1


def test_csv_json_parquet_roundtrip(tmp_path):
    import pandas as pd

    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(3)]
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    (tmp_path / "d.json").write_text(json.dumps(rows))
    for name in ("d.csv", "d.parquet", "d.json"):
        data = load_validated(tmp_path / name)
        assert data.format == "prompt_completion" and len(data.rows) == 3, name
    assert load_validated(tmp_path / "d.csv").rows[0]["_line"] == 2  # header is line 1


def test_csv_empty_cell_is_missing_field(tmp_path):
    (tmp_path / "d.csv").write_text("prompt,completion\nq1,a1\nq2,\n")
    data = load_validated(tmp_path / "d.csv")
    assert [(p.line, p.code, p.field) for p in data.problems] == [(3, "missing_field", "completion")]


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataFileError, match="unknown extension"):
        read_rows(tmp_path / "d.txt")
    with pytest.raises(DataFileError, match="not found"):
        read_rows(tmp_path / "nope.jsonl")


def test_policy_fail_and_max_drop(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps(GOOD) + "\nnot json\n" + json.dumps(GOOD) + "\n")
    data = load_validated(p)
    with pytest.raises(DataValidationError, match="line 2"):
        enforce_policy(data, "fail", 1.0)
    with pytest.raises(DataValidationError, match="max_drop_fraction"):
        enforce_policy(data, "drop", 0.2)
    enforce_policy(data, "drop", 0.5)  # a third dropped: allowed


def test_all_rows_invalid_is_an_error(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("oops\n")
    with pytest.raises(DataValidationError, match="no valid rows"):
        enforce_policy(load_validated(p), "drop", 1.0)


def test_shipped_broken_example_reports_every_bad_line():
    from pathlib import Path

    data = load_validated(Path(__file__).parents[2] / "examples" / "demo" / "broken.jsonl")
    assert len(data.problems) >= 8
    assert all(p.line > 0 and p.code for p in data.problems)
