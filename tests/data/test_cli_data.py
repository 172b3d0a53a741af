"""`tuneforge data redact` and the estimate in `tuneforge data inspect`."""

from __future__ import annotations

import json

import pandas as pd
from conftest import DEMO, write_jsonl
from typer.testing import CliRunner

from tuneforge.cli import app

runner = CliRunner()
ROW = {
    "messages": [
        {"role": "user", "content": "I'm Sarah Connor, card 4111 1111 1111 1111, mail s@c.io"},
        {"role": "assistant", "content": "Thanks, noted."},
    ],
    "id": 3,
}


def test_redact_jsonl_same_format_and_untouched_rows(tmp_path):
    clean = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    src = write_jsonl(tmp_path / "in.jsonl", [ROW, clean])
    with open(src, "a") as fh:
        fh.write("not json, call +44 20 7946 0958\n")
    res = runner.invoke(app, ["data", "redact", str(src), "-o", str(tmp_path / "out.jsonl")])
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["messages"][0]["content"] == "I'm <PERSON>, card <CREDIT_CARD>, mail <EMAIL>"
    assert json.loads(lines[0])["id"] == 3
    assert lines[1] == json.dumps(clean) and lines[2] == "not json, call <PHONE>"
    assert "CREDIT_CARD 1" in res.output


def test_redact_csv_and_type_filter(tmp_path):
    pd.DataFrame([{"prompt": "mail s@c.io or call 415-555-0132", "completion": "ok"}]).to_csv(
        tmp_path / "in.csv", index=False
    )
    res = runner.invoke(
        app, ["data", "redact", str(tmp_path / "in.csv"), "-o", str(tmp_path / "out.csv"), "--type", "email"]
    )
    assert res.exit_code == 0, res.output
    assert pd.read_csv(tmp_path / "out.csv")["prompt"][0] == "mail <EMAIL> or call 415-555-0132"
    bad = runner.invoke(
        app, ["data", "redact", str(tmp_path / "in.csv"), "-o", str(tmp_path / "o.csv"), "--type", "dog"]
    )
    assert bad.exit_code == 2 and "unknown --type" in bad.output
    same = runner.invoke(app, ["data", "redact", str(tmp_path / "in.csv"), "-o", str(tmp_path / "in.csv")])
    assert same.exit_code == 2 and "refusing to overwrite" in same.output


def test_inspect_estimates_tokens_and_epochs(tiny_model_dir):
    res = runner.invoke(
        app, ["data", "inspect", str(DEMO / "train.jsonl"), "--model", str(tiny_model_dir), "--max-length", "60"]
    )
    assert res.exit_code == 0, res.output
    out = res.output
    assert "assistant-only" in out and "over max_length=60" in out and "suggested" in out
    # the only personal data in the demo rows are the fictional company's executives' names
    pii_line = next(line for line in out.splitlines() if line.startswith("pii:"))
    assert "PERSON" in pii_line and not any(t in pii_line for t in ("EMAIL", "PHONE", "IBAN", "SSN", "SECRET"))
    assert "0 exact, 0 near" in out
