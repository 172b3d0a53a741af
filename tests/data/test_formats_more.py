"""Preference, OpenAI DPO, KTO, classification and raw-text formats; column mapping; training round-trips."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_recipe, write_jsonl

from tuneforge.data.formats import normalise, to_kto, to_preference
from tuneforge.data.validate import load_validated

FACTS = [
    ("What colour is the Driftmop?", "The Driftmop is teal.", "It is red."),
    ("Who founded Quorvalen?", "Ansel Prideaux founded Quorvalen.", "Nobody knows."),
    ("Where is Quorvalen based?", "Quorvalen is based in Kelderwick.", "In Paris."),
    ("What is the app called?", "The app is called Hearthlink.", "HomeSync."),
    ("How long is the warranty?", "The warranty lasts 24 months.", "One week."),
    ("What does the kettle hold?", "The kettle holds 1.7 litres.", "Ten litres."),
    ("When is support open?", "Support is open 9 to 5 on weekdays.", "Never."),
    ("What is the mascot?", "The mascot is Nibsy the hedgehog.", "A cat."),
]

ROWS = {
    "alpaca": lambda q, a, r: {"instruction": q, "input": "", "output": a},
    "sharegpt": lambda q, a, r: {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]},
    "prompt_completion": lambda q, a, r: {"prompt": q, "completion": a},
    "preference": lambda q, a, r: {"prompt": q, "chosen": a, "rejected": r},
    "openai_preference": lambda q, a, r: {
        "input": {"messages": [{"role": "user", "content": q}]},
        "preferred_output": [{"role": "assistant", "content": a}],
        "non_preferred_output": [{"role": "assistant", "content": r}],
    },
    "kto": lambda q, a, r: {"prompt": q, "completion": a, "label": True},
    "classification": lambda q, a, r: {"text": a, "label": "fact" if len(a) % 2 else "policy"},
    "text": lambda q, a, r: {"text": f"{q} {a}"},
}


@pytest.mark.parametrize("fmt", sorted(ROWS))
def test_each_format_loads_validates_and_normalises(tmp_path, fmt):
    p = write_jsonl(tmp_path / "d.jsonl", [ROWS[fmt](*f) for f in FACTS])
    data = load_validated(p)
    assert data.format == fmt and len(data.rows) == len(FACTS) and not data.problems
    for r in data.rows:
        assert r["messages"] and r["messages"][-1]["role"] == "assistant" and r["messages"][-1]["content"].strip()


def test_preference_and_kto_round_trip_to_trl_shapes():
    row = normalise({"prompt": "q", "chosen": "good", "rejected": "bad"}, "preference")
    assert to_preference(row) == {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }
    implicit = normalise(
        {
            "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}],
            "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}],
        },
        "preference",
    )
    assert to_preference(implicit) == to_preference(row)
    bad = normalise({"prompt": "q", "completion": "nope", "label": "false"}, "kto")  # CSV-style boolean
    assert bad["messages"][-1]["weight"] == 0 and bad["label"] is False  # SFT never learns it
    assert to_kto(bad) == {
        "prompt": [{"role": "user", "content": "q"}],
        "completion": [{"role": "assistant", "content": "nope"}],
        "label": False,
    }


@pytest.mark.parametrize(
    "row,fmt,code,field",
    [
        ({"prompt": "q", "chosen": "a"}, "preference", "missing_field", "rejected"),
        ({"input": {"messages": "hi"}, "preferred_output": []}, "openai_preference", "missing_field", "input.messages"),
        ({"prompt": "q", "completion": "a", "label": "maybe"}, "kto", "invalid_label", "label"),
        ({"text": "   "}, "text", "empty_text", "text"),
        ({"text": "x", "label": None}, "classification", "missing_label", "label"),
        ({"prompt": "q", "completion": [1], "label": True}, "kto", "message_not_object", "kto[1]"),
    ],
)
def test_format_specific_problems(row, fmt, code, field):
    from tuneforge.data.problems import RowError

    with pytest.raises(RowError) as exc:
        normalise(row, fmt)
    assert (exc.value.code, exc.value.field) == (code, field)


def test_field_mapping_and_problems_name_the_users_column(tmp_path):
    rows = [{"question": q, "answer": a} for q, a, _ in FACTS] + [{"question": "q?"}]
    p = write_jsonl(tmp_path / "d.jsonl", rows)
    data = load_validated(p, fields={"prompt": "question", "completion": "answer"})
    assert data.format == "prompt_completion" and len(data.rows) == len(FACTS)
    assert [(x.line, x.code, x.field) for x in data.problems] == [(9, "missing_field", "answer (as completion)")]


SFT_FORMATS = [
    "alpaca",
    "sharegpt",
    "prompt_completion",
    "preference",
    "openai_preference",
    "kto",
    "classification",
    "text",
]


def test_every_format_trains_on_the_tiny_model(tmp_path, tiny_model_dir):
    """Each format goes load → validate → normalise → prepare → a few SFT steps; loss is finite."""
    from tuneforge.pipeline import run_all

    for fmt in SFT_FORMATS:
        rows = [ROWS[fmt](*f) for f in FACTS] * 2
        rows = [dict(r, id=i) for i, r in enumerate(rows)]  # ids keep the copies apart for dedup=off below
        files = {
            "train": write_jsonl(tmp_path / f"{fmt}.jsonl", rows),
            "test": write_jsonl(tmp_path / f"{fmt}-test.jsonl", [ROWS[fmt](*f) for f in FACTS[:2]]),
        }
        recipe = tiny_recipe(
            tmp_path,
            tiny_model_dir,
            files,
            name=fmt,
            data={"dedup": "off", "leak_check": False, "validation_fraction": 0.0, "plots": False},
            training={"max_steps": 2, "eval_strategy": "no", "batch_size": 4},
            evaluation={"enabled": False},
            export={"enabled": False},
        )
        summary = run_all(recipe, log=lambda *_: None)
        card = json.loads((tmp_path / "runs" / fmt / "data" / "data_card.json").read_text())
        assert card["sources"]["train"]["format"] == fmt
        assert summary["train"]["steps"] == 2, fmt
        losses = [
            json.loads(x)["loss"]
            for x in (tmp_path / "runs" / fmt / "logs" / "metrics.jsonl").read_text().splitlines()
            if '"loss"' in x
        ]
        assert losses and all(loss == loss and loss < 100 for loss in losses), (fmt, losses)
