"""training.kl_to_base: β · KL(tuned ‖ base) on the trained tokens, the base being the same model
with its adapter switched off (`lm/loss.py::label_positions_loss_with_kl`, wired in
`train/trainer.py`): exact gradients, exactly 0 at a zero-init adapter, a real pull towards the
base, and refused at recipe load where there is no adapter to switch off."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DEMO, tiny_recipe

from tuneforge.lm import loss as lm_loss
from tuneforge.lm.collator import PackedCollator, PadCollator
from tuneforge.lm.template import tokenize_messages
from tuneforge.recipe import RecipeError, recipe_from_dict

CONVS = [
    [{"role": "user", "content": "What does the Driftmop V4 cost?"}, {"role": "assistant", "content": "$1,379."}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who founded Quorvalen?"},
        {"role": "assistant", "content": "Ansel Prideaux and Juno Castellane, in a garage."},
    ],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help you today?"}],
]


# --------------------------------------------------------------------------- the loss itself


@pytest.mark.parametrize("autocast", [False, True])
def test_chunked_kl_loss_matches_autograd_reference(autocast):
    """CE + β·KL and its gradients (formed chunk by chunk in the forward pass) equal autograd's on
    full logits, the base logits a constant; the KL comes back alone for logging."""
    torch.manual_seed(0)
    h = torch.randn(37, 16, requires_grad=True)
    hb = h.detach() + 0.5 * torch.randn(37, 16)  # the base's head input: no grad
    w = torch.randn(50, 16, requires_grad=True)
    b = torch.randn(50, requires_grad=True)
    t = torch.randint(0, 50, (37,))
    beta = 0.7
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss, kl = lm_loss._LinearCrossEntropy.apply(h, w, b, t, 8, hb, beta)  # 5 chunks, the last one short
        got = torch.autograd.grad(3 * loss, (h, w, b))
        logp = torch.log_softmax(torch.nn.functional.linear(h, w, b).float(), -1)
        logq = torch.log_softmax(torch.nn.functional.linear(hb, w.detach(), b.detach()).float(), -1)
        ref_kl = (logp.exp() * (logp - logq)).sum()
        ref = torch.nn.functional.nll_loss(logp, t, reduction="sum") + beta * ref_kl
        want = torch.autograd.grad(3 * ref, (h, w, b))
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert kl.item() == pytest.approx(ref_kl.item(), rel=1e-5) and not kl.requires_grad
    # bf16: the reference accumulates the weight gradient in bf16, the chunked path in fp32
    tol = 1e-2 if autocast else 1e-4
    for a, r in zip(got, want):
        assert torch.allclose(a, r, rtol=tol, atol=tol * r.abs().max().item())
    # without a base the function is the plain chunked CE it was (one output)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        plain = lm_loss._LinearCrossEntropy.apply(h, w, b, t, 8)
    assert plain.item() == pytest.approx(torch.nn.functional.nll_loss(logp, t, reduction="sum").item(), rel=1e-5)


@pytest.fixture
def lora_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    def make(zero_init: bool = True):
        torch.manual_seed(0)
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=zero_init)
        return get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), cfg).train()

    return make


def _batch(tokenizer, packed: bool, model) -> tuple[dict, torch.Tensor]:
    from tuneforge.train.setup import resolve_packing

    feats = [tokenize_messages(tokenizer, c) for c in CONVS]
    if packed:
        resolve_packing(True, "lora", model)  # per-example attention, as training sets it
    batch = PackedCollator()(feats) if packed else PadCollator(tokenizer.pad_token_id)(feats)
    return batch, batch.pop("labels")


def _grads(model) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])


@pytest.mark.parametrize("packed", [True, False])
def test_kl_is_zero_at_init_and_the_loss_is_plain_ce(lora_model, tiny_tokenizer, packed):
    """LoRA starts at B = 0: the tuned model is its base, so the KL is 0 (same hidden states, same
    ops: exactly, here ≤ 1e-6) and loss and gradients are the plain CE's, with the fused training
    forwards in place as `train()` has them."""
    from tuneforge.train.fused import fusable, fused_forwards
    from tuneforge.train.trainer import plain_lora_layers

    model = lora_model()
    batch, labels = _batch(tiny_tokenizer, packed, model)
    with fused_forwards(fusable(model, plain_lora_layers(model))):
        ce, n, _ = lm_loss.label_positions_loss(model, batch, labels)
        ce.backward()
        g_ce = _grads(model)
        model.zero_grad()
        loss, kl, n_kl, _ = lm_loss.label_positions_loss_with_kl(model, batch, labels, beta=10.0)
        loss.backward()
    assert n_kl == n > 0
    assert abs(kl.item()) / n <= 1e-6
    assert loss.item() == pytest.approx(ce.item(), rel=1e-6)
    assert torch.allclose(_grads(model), g_ce, rtol=1e-5, atol=1e-7)


def test_materialised_head_path_gives_the_chunked_numbers(lora_model, tiny_tokenizer, monkeypatch):
    """A model whose LM head is not a plain Linear (soft-capped logits, …) materialises the labelled
    logits of both passes instead: same loss, KL and gradients as the chunked path."""
    model = lora_model(zero_init=False)  # a trained-looking adapter: KL > 0
    batch, labels = _batch(tiny_tokenizer, False, model)
    out = []
    for plain_head in (True, False):
        if not plain_head:
            monkeypatch.setattr(lm_loss, "plain_output_head", lambda m: None)
        model.zero_grad()
        loss, kl, n, _ = lm_loss.label_positions_loss_with_kl(model, batch, labels, beta=0.5)
        loss.backward()
        out.append((loss.item(), kl.item(), _grads(model)))
    (l1, k1, g1), (l2, k2, g2) = out
    assert k1 > 0.01 * n and k1 == pytest.approx(k2, rel=1e-4) and l1 == pytest.approx(l2, rel=1e-5)
    assert torch.allclose(g1, g2, rtol=1e-4, atol=1e-4 * g2.abs().max().item())


# --------------------------------------------------------------------------- a real learning effect


def _heldout_kl(model, tokenizer, rows: list[dict]) -> float:
    """Mean KL(tuned ‖ base) per answer token of `rows`, from full logits (independent of the
    label-only code under test)."""
    feats = [tokenize_messages(tokenizer, r["messages"]) for r in rows]
    batch = PadCollator(tokenizer.pad_token_id)(feats)
    labels = batch.pop("labels")
    with torch.no_grad():
        logp = torch.log_softmax(model(**batch).logits.float(), -1)
        with model.disable_adapter():
            logq = torch.log_softmax(model(**batch).logits.float(), -1)
    kl = (logp.exp() * (logp - logq)).sum(-1)[:, :-1]
    return kl[labels[:, 1:] != -100].mean().item()


def test_kl_to_base_keeps_the_tuned_model_near_its_base(tmp_path, tiny_model_dir, demo_subset):
    """40 steps (packed, label-only logits, fused ops: the default fast paths) with β = 0 and β = 5,
    same seed; then KL(tuned ‖ base) on 32 held-out demo questions.

    Measured (tiny Llama, lr 0.05, 48 rows; seed 42 as here, then seeds 0/1/2/3), nats per token:
    β=0 1.544 / 1.457 / 1.319 / 1.554 / 1.389, β=5 0.402 / 0.441 / 0.434 / 0.418 / 0.451; the
    worst β=5 run is 0.34× the closest β=0 one, so "β=5 below 0.6× β=0" holds with a wide margin.
    The β=5 adapter still moves (> 0.1: it learned, it was not frozen).
    """
    from tuneforge.model.load import load_trained
    from tuneforge.pipeline import prepare_stage
    from tuneforge.train.callbacks import read_metrics
    from tuneforge.train.sft import train

    held = [json.loads(line) for line in (DEMO / "test.jsonl").read_text().splitlines()][8:40]  # not in the run
    kl, logs = {}, {}
    for beta in (0.0, 5.0):
        recipe = tiny_recipe(
            tmp_path,
            tiny_model_dir,
            demo_subset,
            name=f"beta{beta:g}",
            data={"plots": False, "leak_check": False},
            training={
                "max_steps": 40,
                "eval_strategy": "no",
                "save_strategy": "steps",
                "save_steps": 1000,
                "threads": 1,
                "tracking": [],
                "kl_to_base": beta,
            },
        )
        run, _ = prepare_stage(recipe)
        info = train(run)
        assert info["packing"] and info["fused_ops"]
        logs[beta] = [r for r in read_metrics(run.metrics_file) if "loss" in r]
        model, tokenizer, _ = load_trained(run)
        kl[beta] = _heldout_kl(model, tokenizer, held)
    assert all("kl_to_base" not in r for r in logs[0.0])
    assert all(r["kl_to_base"] >= 0 for r in logs[5.0])
    # step 1 runs at the zero-init adapter: no KL yet, and the loss is the β = 0 run's
    assert logs[5.0][0]["kl_to_base"] <= 1e-6
    assert logs[5.0][0]["loss"] == pytest.approx(logs[0.0][0]["loss"], rel=1e-5)
    assert 0.1 < kl[5.0] < 0.6 * kl[0.0], kl


# --------------------------------------------------------------------------- refused at load


def _recipe(**sections) -> dict:
    return {"training": {"kl_to_base": 0.1}, **sections}


@pytest.mark.parametrize("kind", ["full", "freeze"])
def test_kl_to_base_needs_an_adapter(kind):
    with pytest.raises(RecipeError) as exc:
        recipe_from_dict(_recipe(strategy={"kind": kind}))
    msg = str(exc.value)
    assert f"training.kl_to_base=0.1 with strategy.kind={kind}" in msg
    assert "adapter switched off" in msg and "set training.kl_to_base=0" in msg


def test_kl_to_base_is_for_sft_and_pretrain_only():
    with pytest.raises(RecipeError) as exc:
        recipe_from_dict(_recipe(objective={"kind": "dpo"}))
    assert "training.kl_to_base=0.1 with objective.kind=dpo" in str(exc.value)
    assert "raise objective.beta instead" in str(exc.value)
    with pytest.raises(RecipeError, match="training.kl_to_base"):
        recipe_from_dict({"training": {"kl_to_base": -1}})
    for strategy in ("lora", "qlora", "dora", "ia3", "prefix", "prompt"):
        for objective in ("sft", "pretrain"):
            recipe_from_dict(_recipe(strategy={"kind": strategy}, objective={"kind": objective}))
    assert recipe_from_dict({}).training.kl_to_base == 0.0


def test_trainer_refuses_kl_without_an_adapter(tiny_model_dir):
    """A caller that builds the trainer itself (not through a checked recipe) gets the same refusal."""
    from transformers import AutoModelForCausalLM

    from tuneforge.recipe import TrainingConfig
    from tuneforge.train.fit import lm_trainer
    from tuneforge.train.setup import ModelSetup, TrainingSetupError

    setup = ModelSetup(AutoModelForCausalLM.from_pretrained(tiny_model_dir), None, None, {}, False, "float32")
    setup.strategy = "full"
    with pytest.raises(TrainingSetupError, match="training.kl_to_base=0.5 needs an adapter"):
        lm_trainer(setup, None, None, None, None, TrainingConfig(kl_to_base=0.5), [], True)
