"""Every strategy on a tiny model: trains, loss falls, exactly the trainable weights move, and
the saved artefact loads back (load_trained) with the in-memory model's logits. Plus the
up-front validation errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import ASSETS, ParamSnapshot, tiny_recipe

from tuneforge.model.load import load_trained
from tuneforge.model.strategies import StrategyError
from tuneforge.pipeline import prepare_stage
from tuneforge.train.setup import TrainingSetupError

PROBE = torch.tensor([[5, 17, 42, 99, 7, 250, 31, 8]])


@pytest.fixture(scope="module")
def tiny64_dir(tmp_path_factory) -> Path:
    """The tiny Llama at hidden 64: bitsandbytes' CPU 4-bit kernels need widths that are multiples of 64."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(ASSETS / "tiny-llama")
    cfg.hidden_size, cfg.intermediate_size, cfg.head_dim = 64, 128, 16
    out = tmp_path_factory.mktemp("tiny64")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    for f in (ASSETS / "tiny-tokenizer").iterdir():
        shutil.copy(f, out / f.name)
    return out


class Snapshot(ParamSnapshot):
    """ParamSnapshot, plus the trained in-memory model's logits on PROBE."""

    def on_train_end(self, args, state, control, model=None, **kw):
        super().on_train_end(args, state, control, model=model, **kw)
        model.eval()
        with torch.no_grad():
            self.logits = model(input_ids=PROBE, attention_mask=torch.ones_like(PROBE)).logits.float()


def _losses(run) -> list[float]:
    return [r["loss"] for r in map(json.loads, run.metrics_file.read_text().splitlines()) if "loss" in r]


def _fast(**training):
    # plain recipe sections for quick runs: no plots, exact dedup, no evaluation during training
    return dict(
        data={"plots": False, "dedup": "exact"},
        training={"max_steps": 8, "eval_strategy": "no", "batch_size": 8, "threads": 1, **training},
    )


CASES = {
    "full": ({"learning_rate": 0.01}, {}),
    "freeze": ({"learning_rate": 0.01}, {"train_layers": 1, "trainable_modules": ["lm_head"]}),
    "lora": ({}, {}),
    "lora+gc": ({"gradient_checkpointing": True}, {"kind": "lora"}),
    "lora+top": ({}, {"kind": "lora", "layers": 1}),
    "dora": ({}, {}),
    "ia3": ({"learning_rate": 0.2}, {}),
    "prefix": ({"learning_rate": 0.05}, {"num_virtual_tokens": 4}),
    "prompt": ({"learning_rate": 0.2}, {"num_virtual_tokens": 4, "prompt_init_text": "Quorvalen support"}),
    "qlora": ({}, {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_strategy_trains_and_reloads(case, tmp_path, tiny_model_dir, tiny64_dir, demo_subset):
    training, strategy = CASES[case]
    kind = strategy.pop("kind", case)
    model_dir = tiny64_dir if kind == "qlora" else tiny_model_dir
    recipe = tiny_recipe(
        tmp_path,
        model_dir,
        demo_subset,
        name=case.replace("+", "-"),
        strategy={"kind": kind, **strategy},
        **_fast(**training),
    )
    run, _ = prepare_stage(recipe)
    snap = Snapshot()
    from tuneforge.train.dispatch import train_run

    info = train_run(run, callbacks=[snap])
    losses = _losses(run)
    assert len(losses) == 8 and sum(losses[-2:]) < sum(losses[:2]), losses
    assert 0 < info["params"]["trainable"] < info["params"]["total"] or kind == "full"
    changed = {n for n in snap.before if not torch.equal(snap.before[n], snap.after[n])}
    assert changed == snap.trainable, (sorted(snap.trainable - changed), sorted(changed - snap.trainable))
    if kind == "freeze":  # layer 1 + final norm + (tied) embeddings/lm_head; layer 0 frozen
        assert not any(".layers.0." in n for n in snap.trainable)
        assert any(".layers.1." in n for n in snap.trainable) and "model.norm.weight" in snap.trainable
        assert run.model_dir.is_dir() and not run.adapter_dir.exists()
    if case == "lora+top":  # adapters on the last layer only
        assert snap.trainable and all(".layers.1." in n for n in snap.trainable)
    if kind not in ("full", "freeze"):
        assert run.adapter_dir.is_dir() and not run.model_dir.exists()

    model, _, _ = load_trained(run, quantized_base=True)
    with torch.no_grad():
        got = model(input_ids=PROBE, attention_mask=torch.ones_like(PROBE)).logits.float()
    torch.testing.assert_close(got, snap.logits, rtol=1e-4, atol=1e-4)
    if kind == "qlora":  # default: the trained adapter on the full-precision base (what a merged export ships)
        fp, _, _ = load_trained(run)
        assert type(fp.base_model.model.model.layers[0].mlp.down_proj.base_layer).__name__ == "Linear"
        lora = {n: p for n, p in fp.named_parameters() if "lora_" in n}
        assert lora and all(torch.equal(p, snap.after[n].to(p.dtype)) for n, p in lora.items())


def test_prompt_tuning_evaluates_and_exports_adapter_only(tmp_path, tiny_model_dir, demo_subset):
    from tuneforge.deploy.export import ExportError, export
    from tuneforge.evaluate.runner import evaluate
    from tuneforge.train.sft import train

    recipe = tiny_recipe(
        tmp_path,
        tiny_model_dir,
        demo_subset,
        strategy={"kind": "prompt", "num_virtual_tokens": 2},
        evaluation={"max_examples": 4, "generalisation": False},
        **_fast(max_steps=2),
    )
    run, _ = prepare_stage(recipe)
    train(run)
    task = evaluate(run)["task"]  # base = the same model with the soft prompt switched off
    assert task["base"]["test_loss"] != task["tuned"]["test_loss"] and task["tuned"]["test_loss"] > 0
    with pytest.raises(ExportError, match="cannot be merged"):
        export(run, formats=["merged"])
    out = export(run)  # recipe default: adapter + merged → adapter only, with a note
    assert out["artefacts"] == {"adapter": "export/adapter"}
    assert any("merged: skipped" in n for n in out["notes"])


@pytest.mark.parametrize(
    "strategy, match",
    [
        ({"kind": "lora", "target_modules": ["q_proj", "nope"]}, r"\['nope'\] not found .* available linear modules"),
        ({"kind": "ia3", "target_modules": ["qkv"]}, "not found in the model"),
        ({"kind": "freeze", "train_layers": 5}, "has only 2 layers"),
        ({"kind": "lora", "layers": 5}, r"strategy.layers=5, but the model has only 2 layers"),
        ({"kind": "freeze", "train_layers": None, "trainable_modules": ["attention_xyz"]}, "matches no module"),
        ({"kind": "freeze", "train_layers": None}, "trains nothing"),
        ({"kind": "prompt", "prompt_init_text": "  "}, "prompt_init_text is empty"),
    ],
)
def test_strategy_validation_errors(strategy, match, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tuneforge.model.strategies import apply_strategy
    from tuneforge.recipe import section

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with pytest.raises(StrategyError, match=match):
        apply_strategy(model, section("strategy", **strategy), str(tiny_model_dir))


def test_lora_on_the_last_layers_stops_backward_below_them(tiny_model_dir):
    """strategy.layers=1: nothing below the last layer needs a gradient, so autograd records no
    backward work there (the point of the option: less work per trained token)."""
    from transformers import AutoModelForCausalLM

    from tuneforge.model.strategies import apply_strategy
    from tuneforge.recipe import section

    model = apply_strategy(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), section("strategy", kind="lora", layers=1)
    )
    layers = model.base_model.model.model.layers
    needs_grad = []
    hooks = [m.register_forward_hook(lambda m, i, o: needs_grad.append(o[0].requires_grad)) for m in layers]
    model.train()
    out = model(input_ids=PROBE, attention_mask=torch.ones_like(PROBE), labels=PROBE)
    for h in hooks:
        h.remove()
    assert needs_grad == [False, True]
    out.loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if ".layers.0." in n)


def test_qlora_errors(tiny_model_dir, monkeypatch):
    from tuneforge.model import quantize
    from tuneforge.recipe import ModelConfig, section

    with pytest.raises(StrategyError, match=r"multiples of 64 .*self_attn.q_proj \(32×32\)"):
        quantize.load_quantized_base(str(tiny_model_dir), "float32")
    real = quantize.importlib.util.find_spec
    monkeypatch.setattr(
        quantize.importlib.util, "find_spec", lambda n, *a: None if n == "bitsandbytes" else real(n, *a)
    )
    from tuneforge.model.load import load_for_training

    with pytest.raises(StrategyError, match="needs bitsandbytes"):
        load_for_training(ModelConfig(base=str(tiny_model_dir)), section("strategy", kind="qlora"), str(tiny_model_dir))


def test_training_setup_errors(tmp_path, tiny_model_dir, demo_subset, monkeypatch):
    from tuneforge.recipe import RecipeError
    from tuneforge.train import setup

    with pytest.raises(RecipeError, match="training.packing=false"):  # refused when the recipe loads
        tiny_recipe(
            tmp_path,
            tiny_model_dir,
            demo_subset,
            strategy={"kind": "prompt"},
            data={"plots": False},
            training={"packing": True, "threads": 1},
        )
    run, _ = prepare_stage(
        tiny_recipe(
            tmp_path,
            tiny_model_dir,
            demo_subset,
            strategy={"kind": "prompt"},
            data={"plots": False},
            training={"threads": 1},
        )
    )
    cfg = run.recipe().training.model_copy(update={"early_stopping_metric": "accuracy", "packing": False})
    with pytest.raises(TrainingSetupError, match=r"logs only \['eval_loss'\]"):
        setup.training_arguments(cfg, tmp_path / "ck", True, metrics=("eval_loss",))
    assert setup.best_metric(cfg) == ("eval_accuracy", True)
    args = setup.training_arguments(cfg.model_copy(update={"early_stopping_metric": "loss"}), tmp_path / "ck", True)
    assert (args.metric_for_best_model, args.greater_is_better) == ("eval_loss", False)
    real = setup.importlib.util.find_spec
    monkeypatch.setattr(
        setup.importlib.util, "find_spec", lambda n, *a: None if n in ("mlflow", "wandb") else real(n, *a)
    )
    with pytest.raises(TrainingSetupError, match=r"\['mlflow', 'wandb'\] not installed — `pip install mlflow wandb`"):
        setup.tracking_callbacks(run, cfg.model_copy(update={"tracking": ["tensorboard", "mlflow", "wandb"]}))
    assert setup.tracking_callbacks(run, cfg.model_copy(update={"tracking": []})) == []


@pytest.mark.parametrize("kind", ["prefix", "prompt"])
def test_label_only_loss_with_virtual_tokens(kind, tiny_model_dir):
    """Prompt tuning shifts the logits by its virtual tokens (prefix tuning does not): the label-only
    loss must still equal the full-logits loss, adapter on and off."""
    from transformers import AutoModelForCausalLM

    from tuneforge.lm.loss import label_positions_loss
    from tuneforge.model.strategies import apply_strategy
    from tuneforge.recipe import section

    model = apply_strategy(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), section("strategy", kind=kind, num_virtual_tokens=3)
    ).eval()
    ids = torch.randint(3, 600, (2, 12), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :6] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    for ctx in (torch.no_grad, model.disable_adapter):
        with torch.no_grad(), ctx():
            loss, n, _ = label_positions_loss(model, batch, labels)
            full = model(**batch, labels=labels).loss
        assert n == 12 and (loss / n).item() == pytest.approx(full.item(), rel=1e-5)
