"""One end-to-end run on the real embedded model (SmolLM2-135M-Instruct), a handful of steps."""

from __future__ import annotations

import json

import pytest
from conftest import DEMO, write_jsonl

pytestmark = pytest.mark.real_model


def test_builtin_model_resolves_and_answers():
    from tuneforge.lm.generate import generate
    from tuneforge.lm.load import load_model, load_tokenizer
    from tuneforge.model.sources import resolve

    src = resolve("smollm2-135m-instruct")
    assert src.kind == "builtin" and len(src.sha256) == 64
    tok, model = load_tokenizer(src.path), load_model(src.path)
    out = generate(model, tok, [[{"role": "user", "content": "What is the capital of France?"}]], max_new_tokens=12)
    assert "Paris" in out[0]


def test_run_on_embedded_model_few_steps(tmp_path):
    from tuneforge.pipeline import run_all
    from tuneforge.recipe import recipe_from_dict

    train = [json.loads(l) for l in (DEMO / "train.jsonl").read_text().splitlines()][:24]
    test = [json.loads(l) for l in (DEMO / "test.jsonl").read_text().splitlines()][:3]
    recipe = recipe_from_dict(
        {
            "name": "real",
            "output_dir": str(tmp_path / "runs"),
            "data": {
                "train": str(write_jsonl(tmp_path / "t.jsonl", train)),
                "test": str(write_jsonl(tmp_path / "s.jsonl", test)),
                "validation_fraction": 0.2,
            },
            "training": {"max_steps": 3, "batch_size": 4, "learning_rate": 0.001, "logging_steps": 1},
            "evaluation": {"max_new_tokens": 8},
            "export": {"golden_count": 1, "golden_max_new_tokens": 6},
        }
    )
    summary = run_all(recipe, log=lambda *_: None)
    assert summary["train"]["steps"] == 3
    assert summary["train"]["params"]["trainable"] > 0
    assert summary["export"]["golden_check"]["result"] == "identical"
    assert set(summary["eval"]) == {"base", "tuned"}
