"""Continued pretraining (packed blocks, loss on every token) and chaining runs through
`model.base: <run dir>` (lineage records the parent; the parent is the comparison base)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import DEMO, tiny_recipe

from tuneforge.model.load import load_trained
from tuneforge.model.sources import MERGED_CACHE, SOURCE_FILE, ModelSourceError, resolve
from tuneforge.pipeline import prepare_stage
from tuneforge.run import RunDir
from tuneforge.train.dispatch import train_run
from tuneforge.train.pretrain import block_dataset, pack_blocks

PROBE = torch.tensor([[5, 17, 42, 99, 7, 250, 31, 8]])
FAST = {"plots": False, "dedup": "exact"}


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=PROBE).logits.float()


def test_pack_blocks_concatenates_with_eos_and_cuts():
    assert pack_blocks([[1, 2, 3], [4, 5, 6, 7, 8]], 0, 4) == [[1, 2, 3, 0], [4, 5, 6, 7], [8, 0]]
    assert pack_blocks([[1, 2, 3]], 9, 4) == [[1, 2, 3, 9]]


def test_pretrain_on_handbook_text(tmp_path, tiny_model_dir, tiny_tokenizer, demo_subset):
    files = {"train": DEMO / "handbook.jsonl", "test": demo_subset["test"]}
    recipe = tiny_recipe(
        tmp_path,
        tiny_model_dir,
        files,
        name="pre",
        data={**FAST, "validation_fraction": 0.2},
        objective={"kind": "pretrain", "block_size": 64},
        strategy={"kind": "full"},
        training={"max_steps": 10, "eval_strategy": "no", "batch_size": 8, "threads": 1, "learning_rate": 0.01},
    )
    run, card = prepare_stage(recipe)
    assert card["sources"]["train"]["format"] == "text" and card["splits"]["validation"]["rows"] >= 1

    # blocks: every document's tokens then EOS, in order, cut into block_size pieces
    texts = [r["messages"][0]["content"] for r in map(json.loads, run.split_file("train").read_text().splitlines())]
    stream = [t for ids in tiny_tokenizer(texts)["input_ids"] for t in ids + [tiny_tokenizer.eos_token_id]]
    ds = block_dataset(run.split_file("train"), tiny_tokenizer, 64)
    blocks = ds["input_ids"]
    assert [t for b in blocks for t in b] == stream and ds["labels"] == blocks
    assert all(len(b) == 64 for b in blocks[:-1]) and 0 < len(blocks[-1]) <= 64

    info = train_run(run)
    losses = [r["loss"] for r in map(json.loads, run.metrics_file.read_text().splitlines()) if "loss" in r]
    assert sum(losses[-2:]) < sum(losses[:2]), losses
    assert info["train_blocks"] == len(blocks) and info["validation_blocks"] >= 1
    assert info["perplexity_after"] < info["perplexity_before"]
    assert run.model_dir.is_dir()

    # a full-model run chains as is: its model/ folder is the next base
    src = resolve(str(run.path))
    assert (src.kind, src.path) == ("run", str(run.model_dir))
    assert src.parent_run["objective"] == "pretrain"


def test_sft_run_chains_into_a_second_run(tmp_path, tiny_model_dir, demo_subset, monkeypatch):
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))  # the merged parent is cached there
    training = {"max_steps": 4, "eval_strategy": "no", "batch_size": 8, "threads": 1}
    parent, _ = prepare_stage(
        tiny_recipe(tmp_path, tiny_model_dir, demo_subset, name="sft", data=FAST, training=training)
    )
    with pytest.raises(ModelSourceError, match="has not finished training"):
        resolve(str(parent.path))
    train_run(parent)
    parent_model, _, _ = load_trained(parent)
    parent_logits = _logits(parent_model)

    before = sorted((p, p.stat().st_mtime_ns) for p in parent.path.rglob("*"))
    child, _ = prepare_stage(
        tiny_recipe(tmp_path, parent.path, demo_subset, name="dpo-like", data=FAST, training=training)
    )
    merged = Path(child.manifest()["base_model"]["path"])
    assert merged.parent == tmp_path / "cache" / "models" / MERGED_CACHE
    assert json.loads((merged / SOURCE_FILE).read_text())["run"] == str(parent.path)
    from transformers import AutoModelForCausalLM

    torch.testing.assert_close(
        _logits(AutoModelForCausalLM.from_pretrained(merged)), parent_logits, rtol=1e-4, atol=1e-4
    )
    stamp = os.stat(merged / "model.safetensors").st_mtime_ns
    train_run(child)
    assert os.stat(merged / "model.safetensors").st_mtime_ns == stamp  # merged once, then reused
    assert sorted((p, p.stat().st_mtime_ns) for p in parent.path.rglob("*")) == before  # the parent is only read

    m = child.manifest()
    assert m["base_model"]["kind"] == "run" and m["base_model"]["path"] == str(merged)
    assert m["parent_run"]["name"] == "sft" and m["parent_run"]["recipe_sha256"] == parent.manifest()["recipe_sha256"]
    assert m["parent_run"]["path"] == str(parent.path.resolve())

    # evaluation's base-vs-tuned: with the child's adapter off, the model is the parent
    model, _, _ = load_trained(child)
    with model.disable_adapter():
        torch.testing.assert_close(_logits(model), parent_logits, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(_logits(model), parent_logits, atol=1e-4)


def test_unmergeable_parent_is_a_clear_error(tmp_path, tiny_model_dir, demo_subset):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, demo_subset, name="soft", strategy={"kind": "prompt"})
    run = RunDir.create(recipe)
    run.stage_finished("train")
    run.adapter_dir.mkdir()
    with pytest.raises(ModelSourceError, match="prompt adapter .* cannot be merged"):
        resolve(str(run.path))
