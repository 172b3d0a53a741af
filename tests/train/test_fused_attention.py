"""Correctness of the training-only kernels: per-example packed attention and the fused ops.

Each is compared with the code it replaces (transformers' SDPA path, PEFT's LoRA layer,
the model's own RMSNorm and MLP): same outputs, same gradients, examples kept apart.
"""

from __future__ import annotations

import pytest
import torch

from tuneforge.lm.collator import PackedCollator, PadCollator
from tuneforge.lm.loss import label_positions_loss
from tuneforge.lm.template import tokenize_messages
from tuneforge.train import attention
from tuneforge.train.fused import _LoraLinear, fusable, fused_forwards, lora_forward
from tuneforge.train.trainer import plain_lora_layers

CONVS = [
    [
        {"role": "user", "content": "What does the Driftmop V4 cost?"},
        {"role": "assistant", "content": "It costs $1,379."},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who founded Quorvalen?"},
        {"role": "assistant", "content": "Ansel Prideaux and Juno Castellane founded it in a garage in Tartu."},
    ],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help you today?"}],
    [
        {"role": "user", "content": "Where is the Lumenhall office? " * 12},
        {
            "role": "assistant",
            "content": "On the third floor of the old mill, next to the river and the station. " * 10,
        },
    ],
]


def lora_model(model_dir, dropout=0.0, seed=0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa")
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear"))
    for n, p in model.named_parameters():
        if "lora_B" in n:  # B starts at zero: give the adapter path a real contribution
            torch.nn.init.normal_(p, std=0.1)
    return model


@pytest.fixture(scope="module")
def feats(tiny_tokenizer):
    return [tokenize_messages(tiny_tokenizer, c) for c in CONVS]


def loss_and_grads(model, batch, autocast=False):
    model.zero_grad()
    batch = dict(batch)
    labels = batch.pop("labels")
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss, n, _ = label_positions_loss(model, batch, labels)
    (loss / n).backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.requires_grad}
    return loss.item(), n, grads


def close(a: dict, b: dict, rel: float) -> bool:
    return all((a[k] - b[k]).norm() <= rel * b[k].norm() + 1e-7 for k in b)


# ----------------------------------------------------------------------------- attention
def test_packed_attention_equals_padded_sdpa_with_gradients(tiny_model_dir, feats, tiny_tokenizer):
    """Packed row through per-example attention = padded batch through transformers' SDPA."""
    model = lora_model(tiny_model_dir)
    ref = loss_and_grads(model, PadCollator(tiny_tokenizer.pad_token_id)(feats))
    model.get_base_model().set_attn_implementation(attention.register())
    got = loss_and_grads(model, PackedCollator()(feats))
    assert got[1] == ref[1]
    assert got[0] == pytest.approx(ref[0], rel=1e-5)
    assert close(got[2], ref[2], 1e-4)


def test_packed_examples_cannot_see_each_other(tiny_model_dir, feats):
    model = lora_model(tiny_model_dir)
    model.get_base_model().set_attn_implementation(attention.register())
    model.eval()

    def logits_of_rest(first_ids):
        b = PackedCollator()([{**feats[0], "input_ids": first_ids}, *feats[1:]])
        b.pop("labels")
        with torch.no_grad():
            return model(**b).logits[0, len(first_ids) :]

    a = logits_of_rest(feats[0]["input_ids"])
    b = logits_of_rest([7] * len(feats[0]["input_ids"]))
    assert torch.equal(a, b)


def test_padded_and_cached_inputs_keep_transformers_semantics(tiny_model_dir, tiny_tokenizer, feats):
    """Anything but a whole unpadded row (padding masks, generation with a KV cache) is
    transformers' SDPA unchanged."""
    from transformers import AutoModelForCausalLM

    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    ours = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    ours.set_attn_implementation(attention.register())
    batch = PadCollator(tiny_tokenizer.pad_token_id)(feats)
    batch.pop("labels")
    with torch.no_grad():
        assert torch.equal(ref(**batch).logits, ours(**batch).logits)
        ids = torch.tensor([feats[1]["input_ids"][:9]])
        a = ref.generate(ids, max_new_tokens=6, do_sample=False)
        b = ours.generate(ids, max_new_tokens=6, do_sample=False)
    assert torch.equal(a, b)


@pytest.mark.parametrize("length,kv_heads", [(40, 3), (300, 1), (500, 3)])  # fp32-flash, fp32-flash, bf16-flash
def test_kernel_choice_per_length_matches_reference(length, kv_heads):
    torch.manual_seed(0)
    q = torch.randn(2, 3, length, 16)
    k, v = (torch.randn(2, kv_heads, length, 16) for _ in range(2))
    rep = 3 // kv_heads
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), is_causal=True
    )
    got = attention._causal(q.bfloat16(), k.bfloat16(), v.bfloat16(), None, 0.0)
    assert got.dtype == torch.bfloat16
    assert (got.float() - ref).abs().max() < 3e-2


def test_segments_from_position_restarts():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    assert attention.segments(pos, 9) == [(0, 3, 0), (3, 5, 0), (5, 9, 0)]
    assert attention.segments(None, 4) == [(0, 4, 0)]
    # a shared prefix of 2 tokens: later examples continue from position 2
    pos = torch.tensor([[0, 1, 2, 3, 2, 3, 4, 0, 1]])
    assert attention.segments(pos, 9) == [(0, 4, 0), (4, 7, 2), (7, 9, 0)]


SHARED = "You are the support assistant of Quorvalen. Answer in one sentence, and say so when you do not know."


@pytest.mark.parametrize("autocast,rel", [(False, 1e-5), (True, 2e-2)])
def test_shared_prefix_row_equals_padded_sdpa_with_gradients(tiny_model_dir, tiny_tokenizer, autocast, rel):
    """Examples that start with the same system prompt: the packed row keeps it once, the
    others attend to that copy, and loss and gradients are the padded batch's."""
    convs = [[{"role": "system", "content": SHARED}, *[m for m in c if m["role"] != "system"]] for c in CONVS]
    fs = [tokenize_messages(tiny_tokenizer, c) for c in convs]
    model = lora_model(tiny_model_dir)
    ref = loss_and_grads(model, PadCollator(tiny_tokenizer.pad_token_id)(fs), autocast)
    model.get_base_model().set_attn_implementation(attention.register())
    batch = PackedCollator(share_prefix=True)(fs)
    unshared = PackedCollator()(fs)
    p = batch["position_ids"][0]
    kept_once = unshared["input_ids"].shape[1] - batch["input_ids"].shape[1]
    assert kept_once >= 3 * 15  # the system prompt's tokens, once instead of 4 times
    assert [s for _a, _b, s in attention.segments(p[None], len(p))][1:] == [kept_once // 3] * 3
    got = loss_and_grads(model, batch, autocast)
    assert got[1] == ref[1]
    assert got[0] == pytest.approx(ref[0], rel=rel)
    assert close(got[2], ref[2], 10 * rel)


def test_shared_prefix_stops_before_labelled_tokens(tiny_tokenizer):
    """A prefix that would reach into a trained token is cut before it; every example keeps
    the state that predicts its first trained token."""
    from tuneforge.lm.collator import shared_prefix

    f = tokenize_messages(
        tiny_tokenizer, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    )
    first = next(i for i, t in enumerate(f["labels"]) if t != -100)
    assert shared_prefix([f, dict(f)]) == first - 1
    # nothing in common beyond a short run: nothing is shared
    b = PackedCollator(share_prefix=True)([f, {"input_ids": [9, *f["input_ids"][1:]], "labels": f["labels"]}])
    assert b["position_ids"][0].tolist() == list(range(len(f["input_ids"]))) * 2


def test_tokens_counted_for_a_shared_prefix_row_are_the_unshared_lengths(feats):
    """tokens/s of a shared-prefix run compares with an unshared one: every example counts whole."""
    from tuneforge.lm.collator import PadCollator
    from tuneforge.train.trainer import tokens_in_batch

    prefix = [7] * 9  # a prompt prefix every example starts with, long enough to be shared
    same = [{"input_ids": prefix + list(f["input_ids"]), "labels": [-100] * 9 + list(f["labels"])} for f in feats]
    whole = sum(len(f["input_ids"]) for f in same)
    shared = PackedCollator(share_prefix=True)(same)
    assert shared["input_ids"].shape[1] < whole  # the prefix was kept once ...
    assert tokens_in_batch(shared) == whole  # ... and counted for every example
    assert tokens_in_batch(PadCollator(0)(same)) == whole


# ----------------------------------------------------------------------------- fused ops
@pytest.mark.parametrize("autocast,rel", [(False, 1e-5), (True, 2e-2)])
def test_fused_ops_match_peft_and_the_models_modules(tiny_model_dir, feats, autocast, rel):
    model = lora_model(tiny_model_dir)
    batch = PackedCollator()(feats)
    model.get_base_model().set_attn_implementation(attention.register())
    ref = loss_and_grads(model, batch, autocast)
    patches = fusable(model, plain_lora_layers(model))
    kinds = {fn.__name__ for _, fn in patches}
    assert kinds == {"lora_forward", "rmsnorm_forward", "mlp_forward"}
    with fused_forwards(patches):
        got = loss_and_grads(model, batch, autocast)
    assert got[0] == pytest.approx(ref[0], rel=rel)
    assert close(got[2], ref[2], rel * 2)
    # restored: the modules run their own forward again
    assert all("forward" not in m.__dict__ for m, _ in patches)


def test_fused_lora_with_dropout_and_bias_matches_peft():
    """Same dropout mask (same RNG draw), a biased base layer, gradients for x, A and B."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(12, 10))
    net = get_peft_model(net, LoraConfig(r=3, lora_alpha=6, lora_dropout=0.3, target_modules=["0"]))
    layer = net.base_model.model[0]
    torch.nn.init.normal_(layer.lora_B["default"].weight)
    net.train()
    x = torch.randn(5, 7, 12, requires_grad=True)

    def run(fn):
        for p in (x, layer.lora_A["default"].weight, layer.lora_B["default"].weight):
            p.grad = None
        torch.manual_seed(1)
        y = fn(x)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        return y.detach(), x.grad.clone(), layer.lora_A["default"].weight.grad.clone()

    ref = run(layer)
    got = run(lambda t: lora_forward(layer, layer.forward, t))
    for a, b in zip(got, ref):
        assert torch.allclose(a, b, atol=1e-5)


def test_fused_lora_declines_what_it_does_not_handle(tiny_model_dir):
    """Disabled or merged adapters go through PEFT's own forward."""
    model = lora_model(tiny_model_dir)
    layer = plain_lora_layers(model)[0]
    calls = []
    original = lambda x, *a, **k: calls.append(1) or layer.forward(x)  # noqa: E731
    x = torch.randn(1, 3, layer.in_features)
    with model.disable_adapter():
        lora_forward(layer, original, x)
    layer.merge()
    lora_forward(layer, original, x)
    assert len(calls) == 2


def test_a_norm_with_other_maths_is_left_alone():
    """Gemma-style `(1 + weight)` norms fail the check against their own forward."""

    class OffsetRMSNorm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(8))
            self.variance_epsilon = 1e-6

        def forward(self, x):
            xf = x.float()
            return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + self.weight)).to(x.dtype)

    net = torch.nn.Sequential(OffsetRMSNorm())
    assert fusable(net, []) == []


def test_fused_ops_survive_gradient_checkpointing(tmp_path, tiny_model_dir, demo_subset, monkeypatch):
    """Checkpointed layers re-run their forward in backward: the fused ops must be in place
    then too, and the run must train like one without them. Packed training also caps
    oneDNN's kernel cache (unless the user set it)."""
    import os

    from conftest import tiny_recipe

    from tuneforge.pipeline import prepare_stage
    from tuneforge.train.sft import train

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)

    infos = {}
    for fused in (True, False):
        r = tiny_recipe(
            tmp_path,
            tiny_model_dir,
            demo_subset,
            name=f"gc-{fused}",
            training={"gradient_checkpointing": True, "fused_ops": fused, "max_steps": 3, "eval_strategy": "no"},
        )
        run, _ = prepare_stage(r)
        infos[fused] = train(run)
    assert infos[True]["fused_ops"] == {"lora_forward": 14, "rmsnorm_forward": 5, "mlp_forward": 2}
    assert infos[True]["packing"] is True
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "16"
    assert infos[True]["train_loss"] == pytest.approx(infos[False]["train_loss"], rel=1e-4)


def test_packing_defaults_on_except_for_virtual_token_strategies(tiny_model_dir):
    from tuneforge.train.setup import resolve_packing

    model = lora_model(tiny_model_dir)
    assert resolve_packing(None, "lora", model) is True
    assert model.get_base_model().config._attn_implementation == attention.NAME
    assert resolve_packing(None, "prompt", lora_model(tiny_model_dir)) is False
    assert resolve_packing(False, "lora", lora_model(tiny_model_dir)) is False


def test_lora_function_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 4, dtype=torch.float64)
    a = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, bias, a, b: _LoraLinear.apply(x, x, w, bias, a, b, 1.5), (x, bias, a, b))
