"""LLM-as-judge: both orders, position bias cancelled, OpenAI-compatible endpoint over HTTP."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from test_review_compare import N, fake_run

from tuneforge.evaluate.judge import judge_pair, judge_prompt, judge_runs, openai_judge, parse_verdict


def fair_judge(prompt: str) -> str:
    """Prefers the answer that says GOOD, wherever it is shown."""
    first = prompt.split("Answer 1:")[1].split("Answer 2:")[0]
    second = prompt.split("Answer 2:")[1]
    g1, g2 = "GOOD" in first, "GOOD" in second
    return "1" if g1 and not g2 else "2" if g2 and not g1 else "tie"


def test_parse_verdict():
    assert [parse_verdict(t) for t in ("1", " 2.", "Answer 2 is better", "It's a tie", "Both are fine", "hmm")] == [
        "1",
        "2",
        "2",
        "tie",
        "tie",
        None,
    ]


def test_both_orders_cancel_position_bias():
    assert judge_pair(fair_judge, "q", "x GOOD", "y bad")["winner"] == "a"
    assert judge_pair(fair_judge, "q", "x bad", "y GOOD")["winner"] == "b"
    biased = judge_pair(lambda p: "Answer 1", "q", "x GOOD", "y bad")
    assert biased["winner"] == "tie" and not biased["consistent"]
    assert "Reference facts: Paris" in judge_prompt("capital?", "a", "b", ["Paris"])


def test_judge_runs_counts_and_writes(tmp_path):
    a = fake_run(tmp_path, "a", good=set(range(9)))
    b = fake_run(tmp_path, "b", good={0, 1, 2, 9, 10})
    res = judge_runs(a, b, fair_judge)
    assert (res["wins_a"], res["wins_b"], res["ties"], res["pairs"]) == (6, 2, 4, N)
    assert res["win_rate_a"] == pytest.approx(0.75)
    assert json.loads((a / "eval" / "judge-b.json").read_text())["wins_a"] == 6


class _Handler(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.seen.append((self.path, body["model"], body["temperature"]))
        reply = fair_judge(body["messages"][0]["content"])
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


def test_openai_compatible_endpoint(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        judge = openai_judge(f"http://127.0.0.1:{server.server_port}/v1", "grader")
        a = fake_run(tmp_path, "a", good={0, 1})
        res = judge_runs(a, "base", judge, limit=4)  # base answers are all 'bad'
        assert res["pairs"] == 4 and res["b"] == "base"
        assert res["wins_a"] == 2 and res["ties"] == 2
        assert _Handler.seen[0] == ("/v1/chat/completions", "grader", 0)
        assert len(_Handler.seen) == 2 * 4  # every pair in both orders
    finally:
        server.shutdown()
