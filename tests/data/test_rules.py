"""Rule-based paraphrases: deterministic, distinct, facts kept exactly, rows augmented without loss."""

from __future__ import annotations

import copy
import random

import pytest

from tuneforge.data.rules import RULES, augment_rows, paraphrase, paraphrases

# questions every rule family has something to work on (a what-is / tell-me / trailing phrase to
# reorder, a synonym, a contraction, a long word to misspell)
TYPICAL = [
    "What is the best way to buy a replacement filter for the QX-4471?",
    "How do I fix it if the brush doesn't spin on the Driftmop V4?",
    "Could you tell me the cheapest plan for teams that don't need support?",
]
FACTS = "Is the QX-4471 still $1,379 with firmware 4.19.2, or is the V4 cheaper? I'm asking for the Driftmop team."
CODES = ("QX-4471", "$1,379", "4.19.2", "V4")


def conv(q: str, a: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], **extra}


def test_same_seed_same_rewrites_and_a_longer_list_extends_a_shorter_one():
    q = TYPICAL[0]
    assert paraphrases(q, 5, seed=7) == paraphrases(q, 5, seed=7)
    assert paraphrases(q, 3, seed=7) == paraphrases(q, 5, seed=7)[:3]
    assert paraphrase(q, random.Random(3)) == paraphrase(q, random.Random(3))
    assert paraphrases(q, 4, seed="run-a") == paraphrases(q, 4, seed="run-a")  # a str seed is stable too


def test_different_seeds_give_different_rewrites():
    q = TYPICAL[1]
    outs = {tuple(paraphrases(q, 4, seed=s)) for s in range(5)}
    assert len(outs) == 5


def test_n_distinct_rewrites_none_of_them_the_input():
    for q in [*TYPICAL, "How long does the Driftmop V4 battery last?"]:
        out = paraphrases(q, 8, seed=0)
        assert len(out) == 8
        assert len(set(out)) == 8
        assert q not in out and all(o.strip() for o in out)
    assert paraphrases("", 3, seed=0) == [] and paraphrases("   ", 3, seed=0) == []
    assert paraphrases(TYPICAL[0], 0, seed=0) == []


@pytest.mark.parametrize("rule", RULES)
def test_each_rule_alone_changes_typical_questions(rule):
    for q in TYPICAL:
        changed = sum(paraphrase(q, random.Random(s), rules=[rule]) != q for s in range(10))
        assert changed == 10, (rule, q, changed)


def test_codes_numbers_and_names_survive_every_rule_over_many_seeds():
    for rule in RULES:
        for s in range(150):
            out = paraphrase(FACTS, random.Random(s), rules=[rule])
            missing = [c for c in CODES if c not in out]
            assert not missing, (rule, s, out)
            # a name may be lower-cased (customers do that), never misspelt
            assert "Driftmop" in out or (rule == "casing" and "driftmop" in out), (rule, s, out)
    for s in range(150):  # all the rules together, over several rewrites each
        for out in paraphrases(FACTS, 3, seed=s):
            assert all(c in out for c in CODES) and "driftmop" in out.lower(), out


def test_typos_only_touch_long_plain_words():
    q = "Does the Hearthlink QX-4471 support firmware 4.19.2?"
    for s in range(100):
        out = paraphrase(q, random.Random(s), rules=["typos"])
        words, orig = out.split(), q.split()
        diff = [(a, b) for a, b in zip(orig, words) if a != b]
        assert len(words) == len(orig) and 1 <= len(diff) <= 2, out
        assert all(a in ("support", "firmware") for a, _ in diff), diff


def test_casing_never_shouts_and_contractions_keep_the_meaning():
    for s in range(30):
        out = paraphrase(TYPICAL[0], random.Random(s), rules=["casing"])
        assert out != out.upper() and "QX-4471" in out and out.lower() == TYPICAL[0].lower()
    # "it's been" is "it has been": never expanded to "it is been"
    out = paraphrase("It's been a week and it isn't here.", random.Random(0), rules=["contractions"])
    assert out == "It's been a week and it is not here."
    assert paraphrase("Do you know what it is?", random.Random(0), rules=["contractions"]) == "Do you know what it is?"


def test_reorder_and_synonyms_leave_text_alone_when_no_pattern_fits():
    q = "Battery life?"
    assert paraphrase(q, random.Random(0), rules=["reorder"]) == q
    assert paraphrase(q, random.Random(0), rules=["synonyms"]) == q
    assert paraphrase("Tell me the opening hours", random.Random(0), rules=["reorder"]) == "The opening hours, please."


def test_email_wraps_the_question_with_a_greeting_and_a_sign_off():
    out = paraphrase(TYPICAL[0], random.Random(1), rules=["email"])
    lines = out.splitlines()
    assert len(lines) >= 6 and lines[0].endswith(",") and lines[-2].endswith(",")
    assert TYPICAL[0] in out and lines[-1].isalpha()


def test_odd_inputs_do_not_raise():
    for q in ["Refund", "refund", "¿Cuánto dura la batería?", "电池能用多久？", "?", "   ", "", "V4", "$5"]:
        for s in range(20):
            out = paraphrase(q, random.Random(s))
            assert isinstance(out, str)
        assert q not in paraphrases(q, 3, seed=0)
    assert paraphrases("Refund", 3, seed=0)  # one word still has rewrites (casing, punctuation, filler, ...)
    with pytest.raises(ValueError, match="unknown paraphrase rule"):
        paraphrase("hi", random.Random(0), rules=["rhyme"])


def test_augment_rows_rewrites_the_last_user_turn_and_keeps_everything_else():
    rows = [
        {
            "messages": [
                {"role": "system", "content": "You are the Driftmop support assistant."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello! How can I help?"},
                {"role": "user", "content": "How long does the Driftmop V4 battery last?"},
                {"role": "assistant", "content": "About 90 minutes."},
            ],
            "fact_id": "battery",
            "_line": 3,
        },
        {"messages": [{"role": "assistant", "content": "orphan reply"}]},  # no user turn: skipped
        {"text": "raw pretraining text"},  # not a conversation: skipped
        conv("What does error E-217 mean?", "The main brush is jammed.", label="errors"),
    ]
    before = copy.deepcopy(rows)
    out = augment_rows(rows, n=3, seed=0)
    assert rows == before  # the input is not mutated
    assert len(out) == 6
    assert [r["provenance"]["source_index"] for r in out] == [0, 0, 0, 3, 3, 3]
    for r in out:
        src = rows[r["provenance"]["source_index"]]
        assert r["provenance"]["generator"] == "rules" and r["provenance"]["rules"]
        assert set(r["provenance"]["rules"]) <= set(RULES)
        assert {k: v for k, v in r.items() if k not in ("messages", "provenance")} == {
            k: v for k, v in src.items() if k != "messages"
        }
        # every message but the last user turn is the same, the last user turn is rewritten
        last = max(i for i, m in enumerate(src["messages"]) if m["role"] == "user")
        for i, (m, orig) in enumerate(zip(r["messages"], src["messages"])):
            assert m["role"] == orig["role"]
            assert (m["content"] != orig["content"]) == (i == last), (i, m)
    assert out[0]["messages"][1]["content"] == "Hi"  # an earlier user turn is kept
    assert augment_rows(rows, n=3, seed=0) == out
    assert augment_rows(rows, n=3, seed=1) != out
