"""The frozen-layer cache (train/frozen_cache.py): same training, less forward work."""

from __future__ import annotations

import json

import pytest


def _train(tmp_path, tiny_model_dir, demo_subset, name, strategy, **training):
    from conftest import tiny_recipe

    from tuneforge.pipeline import prepare_stage
    from tuneforge.train.sft import train

    r = tiny_recipe(
        tmp_path,
        tiny_model_dir,
        demo_subset,
        name=name,
        strategy=strategy,
        training={"epochs": 3, "packing": True, "group_by_length": False, **training},
    )
    run, _ = prepare_stage(r)
    info = train(run)
    rows = [json.loads(line) for line in run.metrics_file.read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    return info, losses, evals


def test_later_epochs_start_at_the_trained_layers_with_the_same_losses(tmp_path, tiny_model_dir, demo_subset):
    """LoRA on the last layer only: epochs 2 and 3 (and every validation pass after the first)
    take layer 0's output from the cache, and every logged training and validation loss is the
    one the full forward gives."""
    on, loss_on, eval_on = _train(tmp_path, tiny_model_dir, demo_subset, "on", {"layers": 1}, frozen_cache=True)
    off, loss_off, eval_off = _train(tmp_path, tiny_model_dir, demo_subset, "off", {"layers": 1}, frozen_cache=False)
    cache = on["frozen_cache"]
    steps_per_epoch = on["steps"] // 3
    assert cache["frozen_layers"] == 1
    # epoch 1 computes every batch; epochs 2-3 and the 2nd/3rd validation pass read them all
    assert cache["batches_from_cache"] >= 2 * steps_per_epoch
    assert cache["examples"] > 0 and not cache["full"]
    assert off["frozen_cache"] == {"off": "training.frozen_cache is off"}
    assert len(loss_on) == len(loss_off) == on["steps"] and len(eval_on) == len(eval_off) >= 3
    assert loss_on == pytest.approx(loss_off, rel=1e-4, abs=1e-5)
    assert eval_on == pytest.approx(eval_off, rel=1e-4, abs=1e-5)
    assert loss_on[-1] < loss_on[0]  # it trained


@pytest.mark.parametrize(
    ("strategy", "reason"),
    [
        ({"kind": "lora"}, "the first decoder layer is trained"),
        ({"kind": "full"}, "the first decoder layer is trained"),
    ],
)
def test_off_where_the_bottom_layers_train(tmp_path, tiny_model_dir, demo_subset, strategy, reason):
    info, _, _ = _train(tmp_path, tiny_model_dir, demo_subset, "x", strategy, max_steps=2, epochs=1)
    assert info["frozen_cache"] == {"off": reason}


def test_off_where_the_frozen_layers_have_dropout(tiny_model_dir):
    """Attention dropout makes the bottom layers' output differ between passes: no cache."""
    from transformers import AutoModelForCausalLM

    from tuneforge.model.strategies import apply_strategy
    from tuneforge.recipe import section
    from tuneforge.train.frozen_cache import why_not

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = apply_strategy(model, section("strategy", kind="lora", layers=1), str(tiny_model_dir))
    assert why_not(model, 1, None) == (1, None)
    assert why_not(model, 2, None) == (0, "more than one process")
    assert why_not(model, 1, 5.0) == (0, "NEFTune adds noise to the embeddings")
    model.config.attention_dropout = 0.1
    assert why_not(model, 1, None) == (0, "attention dropout")
