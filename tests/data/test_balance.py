"""Balance: stratified split, capped and upsampled training rows, and the data card."""

from __future__ import annotations

import json
import random

import pytest
from conftest import tiny_recipe, write_jsonl

from tuneforge.data.balance import cap_rows, distribution, field_value, upsample_rows
from tuneforge.data.split import split_rows

WORDS = (
    "robot kettle lawn mower vacuum hub charger dock filter brush wheel sensor battery screen cable "
    "warranty refund invoice shipping parcel account password login update firmware reset noise smell "
    "leak water power light button handle blade grass carpet dust pet hair schedule map room"
).split()


def conv(q: str, a: str = "ok", **extra) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}], **extra}


def labelled(counts: dict[str, int]) -> list[dict]:
    return [conv(f"question {label} {i}", label=label) for label, n in counts.items() for i in range(n)]


def test_stratified_split_keeps_each_label_share():
    rows = labelled({"a": 60, "b": 30, "c": 10})
    parts = split_rows(rows, {"validation": 0.1, "test": 0.1}, seed=3, stratify_by="label")
    assert distribution(parts["validation"], "label") == {"a": 6, "b": 3, "c": 1}
    assert distribution(parts["test"], "label") == {"a": 6, "b": 3, "c": 1}
    assert distribution(parts["train"], "label") == {"a": 48, "b": 24, "c": 8}
    # same sizes as the unstratified split, and deterministic
    plain = split_rows(rows, {"validation": 0.1, "test": 0.1}, seed=3)
    assert {k: len(v) for k, v in plain.items()} == {k: len(v) for k, v in parts.items()}
    again = split_rows(rows, {"validation": 0.1, "test": 0.1}, seed=3, stratify_by="label")
    assert again == parts


def test_stratify_by_metadata_key_and_missing_values():
    rows = [conv(f"q {i}", metadata={"topic": "billing" if i % 4 else "repair"}) for i in range(40)]
    rows += [conv(f"untagged {i}") for i in range(10)]
    assert field_value(rows[0], "metadata.topic") == "repair" and field_value(rows[-1], "metadata.topic") == "(missing)"
    parts = split_rows(rows, {"validation": 0.2}, seed=0, stratify_by="metadata.topic")
    assert distribution(parts["validation"], "metadata.topic") == {"billing": 6, "(missing)": 2, "repair": 2}


def test_cap_is_seeded_and_keeps_file_order():
    rows = labelled({"a": 60, "b": 30, "c": 10})
    for i, r in enumerate(rows):
        r["_line"] = i + 1
    kept, dropped = cap_rows(rows, "label", 15, seed=1)
    assert distribution(kept, "label") == {"a": 15, "b": 15, "c": 10} and dropped == {"a": 45, "b": 15}
    assert [r["_line"] for r in kept] == sorted(r["_line"] for r in kept)
    assert cap_rows(rows, "label", 15, seed=1)[0] == kept
    assert cap_rows(rows, "label", 15, seed=2)[0] != kept


def test_upsample_repeats_every_row_before_any_twice():
    rows = labelled({"a": 7, "b": 3})
    out, added = upsample_rows(rows, "label", seed=0)
    assert added == {"b": 4} and distribution(out, "label") == {"a": 7, "b": 7}
    copies = [r["messages"][0]["content"] for r in out[10:]]
    assert sorted(set(copies)) == sorted(r["messages"][0]["content"] for r in rows[7:])  # all 3 b rows, one extra


def _classification(n_per_label: dict[str, int], seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"text": " ".join(rng.sample(WORDS, 7)), "label": label} for label, n in n_per_label.items() for _ in range(n)
    ]


def test_prepare_caps_upsamples_and_reports(tmp_path, tiny_model_dir):
    from tuneforge.pipeline import prepare_stage

    files = {
        "train": write_jsonl(tmp_path / "train.jsonl", _classification({"billing": 60, "repair": 30, "other": 10}, 0)),
        "test": write_jsonl(tmp_path / "test.jsonl", _classification({"billing": 3, "repair": 3}, 1)),
    }
    recipe = tiny_recipe(
        tmp_path,
        tiny_model_dir,
        files,
        data={
            "stratify_by": "label",
            "max_per_label": 20,
            "balance": "upsample",
            "plots": True,
            "validation_fraction": 0.1,
        },
    )
    run, card = prepare_stage(recipe)
    bal = card["balance"]
    assert bal["stratified"] == ["validation"] and bal["field"] == "label"
    assert bal["by_split"]["train"] == {"billing": 20, "repair": 20, "other": 20}
    assert bal["by_split"]["validation"] == {"billing": 6, "repair": 3, "other": 1}
    assert bal["capped"]["billing"] == 54 - 20 and bal["capped"]["repair"] == 27 - 20
    assert bal["upsampled"] == {"other": 20 - 9}
    train = [json.loads(x) for x in (run.data_dir / "train.jsonl").read_text().splitlines()]
    assert len(train) == 60 and card["splits"]["train"]["rows"] == 60
    md = (run.data_dir / "data_card.md").read_text()
    assert (
        "## Balance by `label`" in md
        and "capped at 20" in md
        and "other +11" in md
        and "stratified split: validation" in md
    )
    assert "labels.png" in card["plots"]


def test_cap_without_stratify_field_is_a_recipe_error(tmp_path, tiny_model_dir):
    from tuneforge.pipeline import prepare_stage
    from tuneforge.recipe import RecipeError

    files = {
        "train": write_jsonl(tmp_path / "train.jsonl", _classification({"a": 10}, 0)),
        "test": write_jsonl(tmp_path / "test.jsonl", _classification({"a": 2}, 1)),
    }
    with pytest.raises(RecipeError, match="data.max_per_label needs data.stratify_by"):
        prepare_stage(tiny_recipe(tmp_path, tiny_model_dir, files, data={"max_per_label": 5}))
