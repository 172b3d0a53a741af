"""Knowledge index: chunking, retrieval of the right chunk, citations, incremental updates, removal."""

from __future__ import annotations

import json
import sqlite3

from typer.testing import CliRunner

from tuneforge.cli import app
from tuneforge.rag.chunk import chunk_document, chunk_markdown, html_to_markdown
from tuneforge.rag.index import KnowledgeIndex
from tuneforge.rag.retrieve import Retriever, augment_messages

runner = CliRunner()


def test_markdown_chunks_follow_headings_and_split_long_sections():
    chunks = chunk_markdown(
        "# T\nintro\n## A\n" + "Sentence one is here. " * 10 + "\n## B\nshort\n```\n# not a heading\n```", max_chars=100
    )
    assert [c.heading for c in chunks][0] == "T"
    assert {c.heading for c in chunks} == {"T", "T > A", "T > B"}
    assert all(len(c.text) <= 100 for c in chunks)
    assert sum(c.heading == "T > A" for c in chunks) >= 2  # the long section was split at sentences
    assert any("# not a heading" in c.text for c in chunks)  # fenced code is not a heading
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_html_headings_become_sections_and_scripts_vanish():
    md = html_to_markdown("<h1>Help</h1><h2>Hours</h2><p>8 to 5</p><script>x()</script><style>p{}</style>")
    assert md == "# Help\n\n## Hours\n\n8 to 5"
    assert [c.heading for c in chunk_document("html", "<h2>Hours</h2><p>8 to 5</p>")] == ["Hours"]


def test_retrieval_returns_the_right_chunk_and_citations_point_to_it(kb_index):
    r = Retriever.open(kb_index / "index", top_k=2)
    top = r.retrieve("How much does the Zorblat blender cost?")[0]
    assert top.source == "docs/products.md" and top.heading.endswith("Zorblat blender")
    assert "$149" in top.text
    cite = top.citation()
    stored = r.index.chunks([cite["chunk_id"]])[cite["chunk_id"]]  # the citation resolves to that very chunk
    assert stored["doc"] == cite["source"] and stored["ordinal"] == cite["chunk"] and "$149" in stored["text"]
    assert 0 < cite["score"] <= 1

    html = r.retrieve("When is phone support open?")[0]  # HTML document, heading from <h2>
    assert html.source == "docs/help.html" and "8:15" in html.text and html.heading == "Help centre > Opening hours"
    txt = r.retrieve("How many days do I have to return an item?")[0]
    assert txt.source == "docs/policies.txt" and "21 days" in txt.text

    msgs, used = r.augment([{"role": "system", "content": "S"}, {"role": "user", "content": "Zorblat price?"}])
    assert msgs[0] == {"role": "system", "content": "S"} and "$149" in msgs[1]["content"]
    assert msgs[1]["content"].endswith("Question: Zorblat price?") and len(used) == 2
    assert r.retrieve("Zorblat price?", score_threshold=0.99) == []  # threshold filters
    assert augment_messages([{"role": "user", "content": "q"}], []) == [{"role": "user", "content": "q"}]


def test_incremental_update_replaces_only_the_changed_chunk(kb_index):
    index = KnowledgeIndex.open(kb_index / "index")
    before = {c["heading"]: c["id"] for c in index.chunks(list(range(1, 50))).values() if "products" in c["doc"]}
    products = kb_index / "docs" / "products.md"
    products.write_text(products.read_text().replace("$149", "$179"))
    rep = index.update([kb_index / "docs"], root=kb_index)
    assert rep.changed == ["docs/products.md"] and sorted(rep.unchanged) == ["docs/help.html", "docs/policies.txt"]
    assert (rep.chunks_embedded, rep.chunks_removed, rep.chunks_reused) == (1, 1, len(before) - 1)
    index.close()

    r = Retriever.open(kb_index / "index", top_k=3)  # reopened from disk: the update persisted
    top = r.retrieve("How much does the Zorblat blender cost?")[0]
    assert "$179" in top.text and top.chunk_id != before["Zephyr Appliances > Zorblat blender"]
    after = {c["heading"]: c["id"] for c in r.index.chunks(list(range(1, 50))).values() if "products" in c["doc"]}
    assert after["Zephyr Appliances > Vantor fan"] == before["Zephyr Appliances > Vantor fan"]  # untouched ids kept
    db = sqlite3.connect(kb_index / "index" / "chunks.sqlite")
    assert db.execute("SELECT COUNT(*) FROM chunks WHERE text LIKE '%$149%'").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == len(r.index)  # FAISS and SQLite agree


def test_remove_document_and_stale_faiss_is_rebuilt(kb_index):
    res = runner.invoke(
        app, ["rag", "index", "-o", str(kb_index / "index"), "--root", str(kb_index), "--remove", "docs/help.html"]
    )
    assert res.exit_code == 0, res.output
    assert "1 removed document" in res.output
    info = json.loads((kb_index / "index" / "index.json").read_text())
    assert info["documents"] == 2
    r = Retriever.open(kb_index / "index", top_k=5)
    assert all(p.source != "docs/help.html" for p in r.retrieve("When is phone support open?"))

    # a crash between the SQLite commit and the FAISS write leaves a stale generation: rebuilt on open
    info["faiss_generation"] = -5
    (kb_index / "index" / "index.json").write_text(json.dumps(info))
    (kb_index / "index" / "vectors.faiss").unlink()
    again = Retriever.open(kb_index / "index", top_k=5)
    assert len(again.index) == len(r.index)
    assert [p.chunk_id for p in again.retrieve("Zorblat")] == [p.chunk_id for p in r.retrieve("Zorblat")]

    bad = runner.invoke(app, ["rag", "index", "-o", str(kb_index / "index"), "--remove", "nope.md"])
    assert bad.exit_code == 2 and "not in the index" in bad.output


def test_cli_index_and_query(kb, tmp_path):
    out = tmp_path / "idx"
    res = runner.invoke(app, ["rag", "index", str(kb / "docs"), "-o", str(out), "--root", str(kb)])
    assert res.exit_code == 0, res.output
    assert "3 added" in res.output
    res = runner.invoke(app, ["rag", "index", str(kb / "docs"), "-o", str(out), "--root", str(kb)])
    assert "3 unchanged" in res.output and "0 embedded" in res.output  # nothing re-embedded
    res = runner.invoke(app, ["rag", "query", str(out), "What is the warranty?", "-k", "1", "--json"])
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output[res.output.index("[") :])
    assert hits[0]["source"] == "docs/help.html" and "30 month" in hits[0]["text"]
    missing = runner.invoke(app, ["rag", "query", str(tmp_path / "none"), "q"])
    assert missing.exit_code == 2 and "not a tuneforge knowledge index" in missing.output
