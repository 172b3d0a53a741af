"""`tuneforge data augment`: teacher replies validated, deduplicated and tagged with provenance."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest
from conftest import DEMO, write_jsonl
from typer.testing import CliRunner

from tuneforge.cli import app
from tuneforge.data.augment import AugmentError, augment_rows, endpoint_teacher, local_teacher, parse_qa
from tuneforge.data.formats import normalise

runner = CliRunner()


def conv(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


EXISTING = [
    conv("How do I reset the Hearthlink hub?", "Hold the button for ten seconds."),
    conv("What does error E-217 mean?", "The main brush is jammed."),
    conv("How long does shipping take?", "Five working days."),
    conv("Where is the repair center?", "In Dunmore Flats."),
    conv("Where is the repair centre located?", "In Dunmore Flats."),
]
for i, r in enumerate(EXISTING):
    r["_line"] = i + 1

# the stub teacher's reply to each question (keyed by a word of it)
PARAPHRASES = {
    "Hearthlink": 'Rewritten question: "What are the steps to reset my Hearthlink hub?"\nHope this helps!',
    "E-217": "",  # empty
    "shipping": "How long does shipping take?",  # unchanged
    "centre": "Where is the repair center?",  # copies an existing row
    "center": "word " * 400,  # runaway
}


def stub_transport(seen: list):
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.url.path, request.headers.get("authorization"), body))
        prompt = body["messages"][-1]["content"]
        if "question-answer pairs" in prompt:
            reply = (
                "Q: What does Nibsy look like?\nA: Nibsy is a hedgehog.\n\nQ: How long does shipping take?\n"
                "A: Five working days."
                if "Nibsy" in prompt
                else "Sorry, I cannot help with that."
            )
        else:
            reply = next(v for k, v in PARAPHRASES.items() if k in prompt)
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": reply}}]})

    return httpx.MockTransport(handler)


def test_paraphrase_via_endpoint_validates_dedups_and_tags():
    seen: list = []
    teacher = endpoint_teacher("http://teacher.test/v1", "sk-test", "big", transport=stub_transport(seen))
    new, rep = augment_rows(EXISTING, teacher, "paraphrase")
    assert seen[0][0] == "/v1/chat/completions" and seen[0][1] == "Bearer sk-test" and seen[0][2]["model"] == "big"
    assert rep["requests"] == 5 and rep["generated"] == 5 and rep["kept"] == 1
    assert rep["dropped"] == {"duplicate": 1, "empty": 1, "runaway": 1, "unchanged": 1}
    [row] = new
    assert row["messages"] == [
        {"role": "user", "content": "What are the steps to reset my Hearthlink hub?"},
        EXISTING[0]["messages"][1],
    ]
    assert row["provenance"] == {
        "generator": "endpoint:big@http://teacher.test/v1",
        "mode": "paraphrase",
        "source_line": 1,
        "style": "in different words",
    }


def test_qa_from_documents_via_endpoint(tmp_path):
    doc = tmp_path / "glossary.md"
    doc.write_text("# Mascot\nThe mascot is a hedgehog named Nibsy.\n\n# Other\nNothing to see here.\n")
    teacher = endpoint_teacher("http://teacher.test", None, transport=stub_transport([]))
    new, rep = augment_rows(EXISTING, teacher, "qa", [(str(doc), doc.read_text())], n=2)
    assert rep["requests"] == 2 and rep["dropped"] == {"duplicate": 1, "no_qa_pairs": 1} and rep["kept"] == 1
    assert new[0]["messages"][1]["content"] == "Nibsy is a hedgehog."
    assert new[0]["provenance"] == {
        "generator": "endpoint:teacher@http://teacher.test",
        "mode": "qa",
        "source_doc": str(doc),
        "chunk": 0,
    }
    with pytest.raises(AugmentError, match="needs documents"):
        augment_rows(EXISTING, teacher, "qa")


def test_endpoint_errors_name_the_fix():
    refuse = httpx.MockTransport(lambda r: httpx.Response(401, json={"error": "bad key"}))
    with pytest.raises(AugmentError, match="refused the key; pass --api-key"):
        augment_rows(EXISTING, endpoint_teacher("http://t/v1", "x", transport=refuse), "paraphrase")

    def down(request):
        raise httpx.ConnectError("connection refused")

    with pytest.raises(AugmentError, match="cannot reach the teacher"):
        augment_rows(EXISTING, endpoint_teacher("http://t/v1", transport=httpx.MockTransport(down)), "paraphrase")


def test_parse_qa_layouts():
    text = "Here you go:\n**Q1:** What is it?\n**A1:** A robot.\n- Question 2. Price?\n- Answer 2. $5\nQ: dangling"
    assert parse_qa(text) == [("What is it?", "A robot."), ("Price?", "$5")]


def test_tiny_model_teacher_pipeline(tiny_model_dir):
    """The tiny model writes gibberish: the pipeline must still only let valid, tagged, new rows through."""
    teacher = local_teacher(str(tiny_model_dir))
    new, rep = augment_rows(EXISTING, teacher, "paraphrase", n=2, max_new_tokens=12)
    assert rep["generated"] == 10 and rep["kept"] + sum(rep["dropped"].values()) == 10
    assert rep["kept"] == len(new)
    existing_q = {r["messages"][0]["content"] for r in EXISTING}
    for r in new:
        normalise(r, "messages")  # valid by the same rules as user data
        assert r["messages"][0]["content"] not in existing_q and r["messages"][1] in [
            e["messages"][1] for e in EXISTING
        ]
        assert r["provenance"]["generator"] == f"local:{tiny_model_dir}" and r["provenance"]["source_line"] in range(
            1, 6
        )
    assert len({(r["messages"][0]["content"], r["messages"][1]["content"]) for r in new}) == len(new)  # no copies


class _Teacher(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ok = self.headers.get("Authorization") == "Bearer k1"
        question = body["messages"][-1]["content"].rsplit("\n", 1)[-1]
        reply = json.dumps({"choices": [{"message": {"content": f"Could you tell me: {question.lower()}"}}]}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def test_cli_augment_against_a_local_openai_compatible_server(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Teacher)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        src = write_jsonl(tmp_path / "in.jsonl", [{k: v for k, v in r.items() if k != "_line"} for r in EXISTING[:3]])
        out = tmp_path / "out.jsonl"
        url = f"http://127.0.0.1:{server.server_port}/v1"
        res = runner.invoke(app, ["data", "augment", str(src), "-o", str(out), "--endpoint", url, "--api-key", "k1"])
        assert res.exit_code == 0, res.output
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert len(rows) == 6 and all("provenance" not in r for r in rows[:3])
        assert rows[3]["messages"][0]["content"] == "Could you tell me: how do i reset the hearthlink hub?"
        assert rows[3]["provenance"]["mode"] == "paraphrase" and "kept 3" in res.output
        bad = runner.invoke(app, ["data", "augment", str(src), "-o", str(out), "--endpoint", url, "--api-key", "no"])
        assert bad.exit_code == 2 and "HTTP 401" in bad.output
    finally:
        server.shutdown()
    both = runner.invoke(app, ["data", "augment", str(src), "-o", str(out)])
    assert both.exit_code == 2 and "exactly one teacher" in both.output


def test_cli_augment_qa_with_local_teacher(tmp_path, tiny_model_dir):
    src = write_jsonl(tmp_path / "in.jsonl", [])
    res = runner.invoke(
        app,
        [
            "data",
            "augment",
            str(src),
            "-o",
            str(tmp_path / "out.jsonl"),
            "--teacher",
            str(tiny_model_dir),
            "--mode",
            "qa",
            "--docs",
            str(DEMO / "handbook.md"),
            "--limit",
            "2",
            "--max-new-tokens",
            "16",
            "--only-new",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "(qa, 2 request(s))" in res.output
    for r in (json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()):
        assert r["provenance"]["source_doc"] == str(DEMO / "handbook.md")
