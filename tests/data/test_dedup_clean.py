"""Near-duplicates, train/test leaks, cleaning filters, and their place in the data card."""

from __future__ import annotations

import json

from conftest import DEMO, tiny_recipe, write_jsonl

from tuneforge.data.clean import CleanConfig, clean_rows, clean_text, maybe_strip_html
from tuneforge.data.dedup import dedup_rows, find_leaks, remove_leaks


def row(q, a, line=0, **extra):
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], "_line": line, **extra}


def _demo(name):
    return [json.loads(line) for line in (DEMO / name).read_text().splitlines()]


def test_planted_near_duplicates_are_found():
    base = [{**r, "_line": i + 1} for i, r in enumerate(_demo("train.jsonl")[:60])]
    q = lambda i: base[i]["messages"][0]["content"]  # noqa: E731
    a = lambda i: base[i]["messages"][1]["content"]  # noqa: E731
    planted = [
        row(q(3).lower().rstrip("?") + " ?", a(3).rstrip("."), 100),  # case and punctuation
        row(q(7).replace("the", "teh", 1) if "the" in q(7) else q(7) + " pls", a(7), 101),  # a typo
        row(q(12), a(12) + " Thanks!", 102),  # a few words added
        dict(base[20], _line=103),
    ]  # an exact copy
    kept, rep = dedup_rows(base + planted, "near", 0.8)
    assert len(kept) == 60 and kept == base
    assert rep["exact"] == 2 and rep["near"] == 2  # normalisation makes case/punctuation an exact copy
    assert {(p["kept_line"], p["dropped_line"]) for p in rep["pairs"]} == {(4, 100), (8, 101), (13, 102), (21, 103)}
    assert len(dedup_rows(base + planted, "exact")[0]) == 62
    assert len(dedup_rows(base + planted, "off")[0]) == 64


def test_paraphrases_and_kto_contrasts_are_not_duplicates():
    train = [r for r in (json.loads(x) for x in (DEMO / "train.jsonl").read_text().splitlines())]
    assert dedup_rows(train, "near")[1]["near"] == 0  # six phrasings per fact stay
    good = row("When was Quorvalen founded?", "Quorvalen was founded in 1983.", label=True)
    bad = row("When was Quorvalen founded?", "Quorvalen was founded in 1997.", label=False)
    assert len(dedup_rows([good, bad])[0]) == 2


def test_planted_leaks_found_but_demo_paraphrases_are_not():
    train, test = _demo("train.jsonl"), _demo("test.jsonl")
    assert find_leaks(train, test, 0.8) == []  # the demo's test set paraphrases training questions
    leaked = [
        dict(train[5]),
        row(train[40]["messages"][0]["content"].upper() + "!!", train[40]["messages"][1]["content"]),
    ]
    found = find_leaks(train, test + leaked, 0.8)
    assert [(f["other_index"], f["train_index"]) for f in found] == [(len(test), 5), (len(test) + 1, 40)]
    question_only = [{"messages": [train[9]["messages"][0]]}]  # an unanswered test row leaks by its prompt
    assert find_leaks(train, question_only, 0.8)[0]["train_index"] == 9
    parts, rep = remove_leaks({"train": train, "validation": [], "test": test + leaked}, 0.8)
    assert rep["by_split"] == {"validation": 0, "test": 2} and rep["removed_from_train"] == 2
    assert train[5] not in parts["train"] and len(parts["train"]) == len(train) - 2


def test_clean_text_and_html():
    assert clean_text("e\u0301\u200b  \r\nx  \n\n\n\ny ") == "é\nx\n\ny"
    assert clean_text("ﬁ ²", "NFKC") == "fi 2" and clean_text("ﬁ", "NFC") == "ﬁ"
    assert maybe_strip_html("<div><p>A &lt; B</p><script>x()</script></div>") == "A < B"
    assert maybe_strip_html("if a < b and c > d") == "if a < b and c > d"
    assert clean_text("    indented code", "NFC") == "indented code"  # only the ends are trimmed
    assert clean_text("a\n    indented", "NFC") == "a\n    indented"


def test_filters_drop_with_reasons():
    cfg = CleanConfig(min_chars=10, max_chars=200, strip_html=True)
    rows = [
        row("What is it?", "A kettle.", 1),
        row("Hi", "Yo", 2),
        row("Q" * 5, "x" * 300, 3),
        row("Song?", "la la\n" * 5 + "end", 4),
        row("Scream?", "a" + "h" * 80, 5),
        row("<p></p>", "ok ok ok ok", 6),
    ]
    kept, problems, changed = clean_rows(rows, cfg)
    assert [r["_line"] for r in kept] == [1]
    assert [(p.line, p.code) for p in problems] == [
        (2, "too_short"),
        (3, "too_many_chars"),
        (4, "repeated_lines"),
        (5, "repeated_chars"),
        (6, "empty_content"),
    ]
    assert changed == 1  # the HTML row


def test_prepare_card_reports_pii_dupes_leaks_and_plots(tmp_path, tiny_model_dir):
    from tuneforge.pipeline import prepare_stage

    train = _demo("train.jsonl")[:60]
    train[3] = row("My email is jane.doe@example.com, why no refund?", "Refunds take 5 days.")
    train.append(dict(train[10]))  # exact duplicate
    test = _demo("test.jsonl")[:8] + [train[20]]  # a planted leak
    files = {"train": write_jsonl(tmp_path / "train.jsonl", train), "test": write_jsonl(tmp_path / "test.jsonl", test)}
    # the demo company's executives are named in its facts: allowed, as a user allows public names
    execs = ["Marisol Dunkerley", "Pallas Ndiaye", "Ansel Prideaux", "Juno Castellane"]
    recipe = tiny_recipe(tmp_path, tiny_model_dir, files, data={"pii": "redact", "pii_allow": execs})
    run, card = prepare_stage(recipe)
    assert card["sources"]["train"]["pii"]["counts"] == {"EMAIL": 1}
    assert card["dedup"]["exact"] == 1
    assert card["leaks"]["by_split"]["test"] == 1 and card["leaks"]["removed_from_train"] == 1
    rows = [json.loads(x) for x in (run.data_dir / "train.jsonl").read_text().splitlines()]
    texts = [
        r["messages"][0]["content"]
        for r in rows + [json.loads(x) for x in (run.data_dir / "validation.jsonl").read_text().splitlines()]
    ]
    assert "My email is <EMAIL>, why no refund?" in texts and train[20]["messages"][0]["content"] not in texts
    md = (run.data_dir / "data_card.md").read_text()
    assert "EMAIL 1" in md and "1 exact" in md and "test: 1" in md and "suggested epochs" in md
    png = run.data_dir / "lengths.png"
    assert card["plots"] == ["lengths.png"] and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
