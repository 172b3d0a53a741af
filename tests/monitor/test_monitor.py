"""Serving statistics, output checks, thresholds, the CLI exit code and the HTML report."""

from __future__ import annotations

import json
import sqlite3

import pytest
from typer.testing import CliRunner

from tuneforge.monitor.check import run_check
from tuneforge.monitor.config import MonitorConfigError, load_config

from .helpers import write_log


@pytest.fixture
def log(tmp_path):
    rows = [
        {"latency_ms": float(10 * (i + 1)), "completion_tokens": 4, "text": '{"a": 2}'} for i in range(10)
    ]  # a: healthy
    rows += [
        {
            "adapter": "b",
            "model": "b",
            "status": 500,
            "error_code": "server_error",
            "finish_reason": None,
            "completion": json.dumps([""]),
        }
        for _ in range(3)
    ]  # b: errors
    rows += [
        {"adapter": "b", "model": "b", "text": t, "finish_reason": f}
        for t, f in [
            ("", "stop"),
            ("I can't help with that request.", "stop"),
            ('{"a": 1}', "stop"),
            ("not json", "length"),
            ("more", "length"),
        ]
    ]
    rows += [{"adapter": "b", "model": "b", "status": 499, "finish_reason": "cancelled"}]  # not an error
    return write_log(tmp_path / "requests.db", rows)


def test_statistics_and_output_checks(log, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "required": ["a"]}))
    cfg = load_config(None, {"json_schema": str(schema), "thresholds.min_requests": 1, "windows.minutes": 1})
    res = run_check(log, cfg)
    a, b = res["adapters"]["a"], res["adapters"]["b"]
    assert a["requests"] == 10 and a["error_rate"] == 0
    assert a["latency_p50_ms"] == pytest.approx(55.0) and a["latency_p95_ms"] == pytest.approx(95.5)
    assert (a["prompt_tokens"], a["completion_tokens"]) == (50, 40)
    assert (b["requests"], b["errors"], b["cancelled"]) == (9, 3, 1)
    assert b["error_rate"] == pytest.approx(3 / 9)
    assert (b["empty"], b["refusal"], b["truncated"], b["invalid_json"]) == (1, 1, 2, 4)
    assert b["truncated_rate"] == pytest.approx(2 / 5)
    assert {w["adapter"] for w in res["windows"]} == {"a", "b"} and sum(w["requests"] for w in res["windows"]) == 19
    breached = {(x["scope"], x["metric"]) for x in res["breaches"]}
    assert (
        ("b", "error_rate") in breached and ("b", "invalid_json_rate") in breached and ("b", "empty_rate") in breached
    )
    assert not any(scope == "a" for scope, _ in breached)
    assert res["ok"] is False


def test_cli_exit_codes_and_html_report(log, tmp_path):
    from tuneforge.cli import app

    strict, loose = tmp_path / "strict.yaml", tmp_path / "loose.yaml"
    strict.write_text("thresholds:\n  max_error_rate: 0.1\n  min_requests: 5\n")
    loose.write_text(
        "thresholds:\n  max_error_rate: 0.5\n  max_empty_rate: 0.5\n  max_refusal_rate: 0.5\n"
        "  max_truncated_rate: 0.5\n  min_requests: 5\n"
    )
    cli = CliRunner()
    bad = cli.invoke(app, ["monitor", "check", "--log", str(log), "--config", str(strict)])
    assert bad.exit_code == 1 and "b: error_rate 0.3333 > 0.1" in bad.output
    ok = cli.invoke(app, ["monitor", "check", "--log", str(log), "--config", str(loose), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["overall"]["requests"] == 19
    out = tmp_path / "report.html"
    rep = cli.invoke(app, ["monitor", "report", "--log", str(log), "--config", str(strict), "-o", str(out)])
    assert rep.exit_code == 0, rep.output
    html = out.read_text()
    assert html.count("data:image/png;base64,") == 1 and "BREACHED" in html and "error_rate" in html
    typo = tmp_path / "typo.yaml"
    typo.write_text("thresholds:\n  max_eror_rate: 0.1\ndrift:\n  p_value: 2\n")
    res = cli.invoke(app, ["monitor", "check", "--log", str(log), "--config", str(typo)])
    assert (
        res.exit_code == 2
        and "did you mean 'thresholds.max_error_rate'" in res.output
        and "drift.p_value" in res.output
    )
    with pytest.raises(MonitorConfigError, match="unknown key"):
        load_config(None, {"drift.nope": 1})


def test_v1_request_log_is_upgraded(tmp_path):
    from tuneforge.monitor.requestlog import find_request, init_db, read_feedback, write_feedback

    path = write_log(tmp_path / "old.db", [{}])
    with sqlite3.connect(path) as conn:  # make it look like a log written by schema v1
        conn.execute("DROP TABLE feedback")
        conn.execute("PRAGMA user_version = 1")
    init_db(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    assert find_request(path, "chatcmpl-0")["adapter"] == "a" and find_request(path, "nope") is None
    write_feedback(path, "chatcmpl-0", "down")
    write_feedback(path, "chatcmpl-0", "up", "better")  # a later rating replaces the first
    [fb] = read_feedback(path)
    assert (fb["rating"], fb["correction"], fb["model"]) == ("up", "better", "a")
