"""Preference pairs and KTO rows are length-checked on every side the trainer sees.

TRL's DPO/ORPO/KTO trainers cut prompt + completion to `max_length` without a word, so a pair
whose rejected answer is too long would train on a truncated answer. The data stage must drop
and count it like an over-long SFT row (issue 17, defect 2). A real tokenizer and chat template
(tests/assets/tiny-tokenizer) measure the lengths.
"""

from __future__ import annotations

import json

from conftest import write_jsonl

from tuneforge.data.prepare import length_check, prepare, rejected_length
from tuneforge.data.validate import load_validated
from tuneforge.lm.template import ensure_chat_template, tokenize_messages
from tuneforge.recipe import DataConfig
from tuneforge.run import RunDir

MAX = 64


def _pair(i: int, chosen: str = "short answer", rejected: str = "bad answer") -> dict:
    return {"prompt": f"question number {i}?", "chosen": chosen, "rejected": rejected}


def _long(words: int = 200) -> str:
    return " ".join(f"word{k}" for k in range(words))


def _cfg(path, **kw) -> DataConfig:
    base = dict(
        train=str(path),
        max_length=MAX,
        validation_fraction=0.0,
        test_fraction=0.0,
        leak_check=False,
        dedup="off",
        plots=False,
        estimate_time=False,
    )
    return DataConfig(**{**base, **kw})


def _run(tmp_path) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.path.mkdir(parents=True)
    run.manifest_file.write_text("{}")
    return run


def test_rejected_side_is_measured_with_the_chat_template(tmp_path, tiny_tokenizer):
    tok = ensure_chat_template(tiny_tokenizer)
    path = write_jsonl(tmp_path / "p.jsonl", [_pair(0, rejected=_long())])
    row = load_validated(str(path), "auto").rows[0]
    prompt = row["messages"][:-1]
    expected = len(tokenize_messages(tok, prompt + row["rejected"])["input_ids"])
    assert rejected_length(tok, row) == expected > MAX
    # and the chosen side alone fits: the old check (prompt + chosen only) let this pair through
    assert len(tokenize_messages(tok, row["messages"])["input_ids"]) <= MAX


def test_pair_with_overlong_rejected_answer_is_dropped_and_counted(tmp_path, tiny_tokenizer):
    tok = ensure_chat_template(tiny_tokenizer)
    rows = [_pair(i) for i in range(6)]
    rows[2] = _pair(2, rejected=_long())  # only the rejected side is too long
    rows[4] = _pair(4, chosen=_long())  # the chosen side is too long (checked before, still is)
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    run = _run(tmp_path)
    card = prepare(_cfg(path), run, tok)

    split = card["splits"]["train"]
    assert split["rows"] == 4
    assert split["dropped_too_long"] == 2
    assert split["dropped_too_long_rejected"] == 1
    reasons = [e["reason"] for e in split["problems"]["examples"]["too_long"]]
    assert any("rejected" in r for r in reasons)
    kept = [json.loads(line) for line in run.split_file("train").read_text().splitlines()]
    prompts = {m["content"] for r in kept for m in r["messages"] if m["role"] == "user"}
    assert "question number 2?" not in prompts and "question number 4?" not in prompts
    # every side of every kept pair fits: nothing is left for the trainer to cut
    for r in kept:
        assert len(tokenize_messages(tok, r["messages"])["input_ids"]) <= MAX
        assert rejected_length(tok, r) <= MAX
    assert "rejected side" in (run.data_dir / "data_card.md").read_text()


def test_kto_rows_over_max_length_are_dropped_and_undesirable_rows_kept_for_kto(tmp_path, tiny_tokenizer):
    tok = ensure_chat_template(tiny_tokenizer)
    rows = [{"prompt": f"q{i}?", "completion": "an answer", "label": i % 2 == 0} for i in range(6)]
    rows[1] = {"prompt": "q1?", "completion": _long(), "label": False}  # over-long undesirable row
    path = write_jsonl(tmp_path / "kto.jsonl", rows)
    data = load_validated(str(path), "auto").rows
    cfg = _cfg(path)

    kept, stats = length_check(data, tok, cfg, "train", keep_undesirable=True)
    assert stats["dropped_too_long"] == 1 and len(kept) == 5
    assert sum(r["label"] is False for r in kept) == 2  # KTO keeps its undesirable examples
    # for SFT an undesirable row carries no loss and is still dropped (counted, not silent)
    kept_sft, stats_sft = length_check(data, tok, cfg, "train")
    assert all(r["label"] for r in kept_sft) and stats_sft["dropped_too_long"] == 1
