"""What prepare adds against forgetting and invention: mixing, paraphrase validation,
rule paraphrases, 'I don't know' rows and self-distilled replay (through `prepare` itself)."""

from __future__ import annotations

import json

from conftest import DEMO, write_jsonl

from tuneforge.data.prepare import prepare
from tuneforge.data.split import answer_key, prompt_key
from tuneforge.lm.template import ensure_chat_template
from tuneforge.recipe import DataConfig
from tuneforge.run import RunDir


def _run(tmp_path, name="run") -> RunDir:
    run = RunDir(tmp_path / name)
    run.path.mkdir(parents=True)
    run.manifest_file.write_text("{}")
    return run


def _cfg(train, **kw) -> DataConfig:
    base = dict(train=train, plots=False, estimate_time=False, replay={"enabled": False}, test_fraction=0.0)
    return DataConfig(**{**base, **kw})


def _split(run: RunDir, name: str) -> list[dict]:
    return [json.loads(x) for x in run.split_file(name).read_text().splitlines()]


def _demo(n: int | None = None) -> list[dict]:
    return [json.loads(x) for x in (DEMO / "train.jsonl").read_text().splitlines()][:n]


def test_mixture_fractions_and_per_source_formats(tmp_path, tiny_tokenizer):
    tok = ensure_chat_template(tiny_tokenizer)
    chat = write_jsonl(tmp_path / "chat.jsonl", _demo(60))
    alpaca = write_jsonl(
        tmp_path / "alpaca.jsonl",
        [
            {"question": f"General question {i}: name a colour.", "answer": f"Colour number {i} is blue."}
            for i in range(10)
        ],
    )
    sources = [
        str(chat),
        {
            "path": str(alpaca),
            "fraction": 0.4,
            "format": "prompt_completion",
            "fields": {"prompt": "question", "completion": "answer"},
        },
    ]
    cfgs = [_cfg(sources, validation_fraction=0.0, dedup="exact") for _ in range(2)]
    runs = [_run(tmp_path, f"r{i}") for i in range(2)]
    cards = [prepare(c, r, tok) for c, r in zip(cfgs, runs)]
    mx = cards[0]["mixture"]["sources"]
    assert [s["rows_available"] for s in mx] == [60, 10]
    # 60 rows without a fraction are 60 % of the mixture: 40 % is 40 rows, i.e. each general row 4 times
    assert mx[1]["rows_used"] == 40 and mx[1]["share"] == 0.4 and mx[1]["repeats"] == 4.0
    assert cards[0]["splits"]["train"]["rows"] == 100
    assert set(cards[0]["sources"]) == {"train:chat.jsonl", "train:alpaca.jsonl"}
    assert _split(runs[0], "train") == _split(runs[1], "train")  # deterministic by seed
    assert all("_source" not in r for r in _split(runs[0], "train"))
    assert "## Mixture" in (runs[0].data_dir / "data_card.md").read_text()


def test_paraphrase_validation_keeps_every_fact_in_training(tmp_path, tiny_tokenizer):
    tok = ensure_chat_template(tiny_tokenizer)
    run = _run(tmp_path)
    card = prepare(_cfg(str(DEMO / "train.jsonl"), validation_fraction=0.1), run, tok)
    assert card["validation_split"] == "paraphrase"
    train, val = _split(run, "train"), _split(run, "validation")
    assert 25 <= len(val) <= 35
    taught = {answer_key(r) for r in train}
    assert all(answer_key(r) in taught for r in val)  # the fact stays in training ...
    assert not {prompt_key(r) for r in val} & {prompt_key(r) for r in train}  # ... in other words
    # data whose answers are all different has no paraphrases: a random split, said so
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}?"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(30)
    ]
    run2 = _run(tmp_path, "r2")
    assert prepare(_cfg(str(write_jsonl(tmp_path / "u.jsonl", rows))), run2, tok)["validation_split"] == "random"


def test_rule_paraphrases_augment_training_only_and_never_leak(tmp_path, tiny_tokenizer):
    tok = ensure_chat_template(tiny_tokenizer)
    run = _run(tmp_path)
    cfg = _cfg(str(DEMO / "train.jsonl"), test=str(DEMO / "test.jsonl"), augment={"n": 1})
    card = prepare(cfg, run, tok)
    aug = card["augment"]
    assert aug["generator"] == "rules" and aug["rows"] > 200
    train = _split(run, "train")
    added = [r for r in train if (r.get("provenance") or {}).get("generator") == "rules"]
    assert len(added) == aug["rows"]
    originals = {r["messages"][-1]["content"] for r in train if "provenance" not in r}
    assert all(r["messages"][-1]["content"] in originals for r in added)  # answers kept
    val_q = {prompt_key(r) for r in _split(run, "validation")}
    assert not val_q & {prompt_key(r) for r in added}  # validation questions are never rewritten into train
    assert "paraphrases (rules" in (run.data_dir / "data_card.md").read_text()


def test_abstain_rows_from_file_and_generated_never_contradict_the_data(tmp_path, tiny_tokenizer):
    tok = ensure_chat_template(tiny_tokenizer)
    rows = _demo()
    train_q = rows[0]["messages"][0]["content"]
    qfile = write_jsonl(
        tmp_path / "unknown.jsonl",
        [
            {"messages": [{"role": "user", "content": "Does the company run a summer camp for kids?"}]},
            {"messages": [{"role": "user", "content": train_q}]},  # answerable: must be dropped
        ],
    )
    run = _run(tmp_path)
    cfg = _cfg(str(DEMO / "train.jsonl"), abstain={"questions": str(qfile), "auto": 30, "replies": ["No idea, sorry."]})
    card = prepare(cfg, run, tok)
    ab = card["abstain"]
    assert ab["auto"]["names"][0] == "Quorvalen" and ab["auto"]["generated"] == 30
    assert ab["dropped_close_to_training"] >= 1 and ab["rows"] == 31
    refusals = [r for r in _split(run, "train") if r["messages"][-1]["content"] == "No idea, sorry."]
    asked = {r["messages"][0]["content"] for r in refusals}
    assert "Does the company run a summer camp for kids?" in asked and train_q not in asked
    vocab = " ".join(m["content"].lower() for r in rows for m in r["messages"])
    # generated questions ask about things the data never mentions (e.g. no 'warranty' question: it does)
    assert "warranty" in vocab and not any("warranty" in q.lower() for q in asked)


def test_replay_adds_finished_base_answers_and_caches_them(tmp_path, tiny_tokenizer):
    tok = ensure_chat_template(tiny_tokenizer)
    calls: list[int] = []

    def answer(convs, max_new_tokens):
        calls.append(len(convs))
        # every third answer runs out of budget: such answers are left out, never cut
        return [(f"General answer {len(c[-1]['content'])}.", i % 3 != 0) for i, c in enumerate(convs)]

    cfg = _cfg(
        str(write_jsonl(tmp_path / "t.jsonl", _demo(40))),
        validation_fraction=0.0,
        replay={"enabled": True, "ratio": 0.5, "cache_dir": str(tmp_path / "cache")},
    )
    run = _run(tmp_path)
    card = prepare(cfg, run, tok, replay_answer=answer)
    rp = card["replay"]
    assert (
        rp["wanted"] == 20 and rp["rows"] == 20 and rp["left_out_unfinished"] >= 1 and sum(calls) == rp["generated_now"]
    )
    replayed = [r for r in _split(run, "train") if (r.get("provenance") or {}).get("generator") == "replay"]
    assert len(replayed) == 20 and all(r["messages"][-1]["content"].startswith("General answer") for r in replayed)
    assert all(r["messages"][0]["role"] == "user" for r in replayed)
    # a second prepare on the same base model generates nothing: the answers come from the cache
    calls.clear()
    card2 = prepare(cfg, _run(tmp_path, "again"), tok, replay_answer=answer)
    assert calls == [] and card2["replay"]["generated_now"] == 0 and card2["replay"]["rows"] == 20
    assert "replay of the base model's own answers: 20 rows" in (run.data_dir / "data_card.md").read_text()


def test_replay_is_on_by_default_for_sft_only(tmp_path):
    from tuneforge.data.enrich import replay_wanted

    cfg = DataConfig()
    assert replay_wanted(cfg, "sft", ["messages"]) and not replay_wanted(cfg, "sft", ["text"])
    assert not replay_wanted(cfg, "dpo", ["preference"]) and not replay_wanted(cfg, "pretrain", ["text"])
    assert replay_wanted(DataConfig(replay={"enabled": True}), "kto", ["kto"])
