"""Correctness of the fast training paths: packing isolation, label-only logits, bf16 parity."""

from __future__ import annotations

import pytest
import torch

from tuneforge.lm.collator import PackedCollator, PadCollator
from tuneforge.lm.loss import label_positions_loss
from tuneforge.lm.template import tokenize_messages

CONVS = [
    [
        {"role": "user", "content": "What does the Driftmop V4 cost?"},
        {"role": "assistant", "content": "It costs $1,379."},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Who founded Quorvalen?"},
        {"role": "assistant", "content": "Ansel Prideaux and Juno Castellane founded it in a garage."},
    ],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help you today?"}],
]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    m.eval()
    return m


@pytest.fixture(scope="module")
def feats(tiny_tokenizer):
    return [tokenize_messages(tiny_tokenizer, c) for c in CONVS]


def reference_loss(model, feats) -> tuple[float, int]:
    """Each example alone, full logits, HF's own loss: the ground truth."""
    total, n = 0.0, 0
    for f in feats:
        ids, labels = torch.tensor([f["input_ids"]]), torch.tensor([f["labels"]])
        count = int((labels[:, 1:] != -100).sum())
        with torch.no_grad():
            total += model(input_ids=ids, labels=labels).loss.item() * count
        n += count
    return total, n


def test_packed_loss_equals_separate_examples(model, feats):
    ref, n_ref = reference_loss(model, feats)
    batch = PackedCollator()(feats)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    labels = batch.pop("labels")
    with torch.no_grad():
        loss, n, _ = label_positions_loss(model, batch, labels)
    assert n == n_ref
    assert loss.item() == pytest.approx(ref, rel=1e-5)


def test_packed_examples_do_not_attend_to_each_other(model, feats):
    """Changing the first example must not change any logit of the second."""

    def logits_of_second(first_ids):
        fs = [{**feats[0], "input_ids": first_ids}, feats[1]]
        b = PackedCollator()(fs)
        b.pop("labels")
        with torch.no_grad():
            out = model(**b).logits[0]
        return out[len(first_ids) :]

    a = logits_of_second(feats[0]["input_ids"])
    b = logits_of_second([5] * len(feats[0]["input_ids"]))
    assert torch.allclose(a, b, atol=1e-5)


def test_padded_label_only_loss_equals_full_logits(model, feats, tiny_tokenizer):
    ref, n_ref = reference_loss(model, feats)
    batch = PadCollator(tiny_tokenizer.pad_token_id)(feats)
    labels = batch.pop("labels")
    with torch.no_grad():
        loss, n, out = label_positions_loss(model, batch, labels)
        full = model(**batch).logits
    assert n == n_ref and loss.item() == pytest.approx(ref, rel=1e-5)
    assert out.logits.shape[1] < full.shape[1]  # the head really ran on fewer positions


def test_bf16_autocast_loss_parity(model, feats):
    """bf16 matmuls with fp32 weights: loss within 1% of fp32 (the stated tolerance)."""
    batch = PackedCollator()(feats)
    labels = batch.pop("labels")
    with torch.no_grad():
        fp32, n, _ = label_positions_loss(model, batch, labels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16, _, _ = label_positions_loss(model, batch, labels)
    assert abs(bf16.item() - fp32.item()) / fp32.item() < 0.01


def test_training_with_fast_paths_matches_plain_path(tmp_path, tiny_model_dir, demo_subset):
    """Same recipe trained with and without packing/label-only logits ends at the same loss."""
    from conftest import tiny_recipe

    from tuneforge.evaluate.metrics import mean_loss
    from tuneforge.io import read_jsonl
    from tuneforge.model.load import load_trained
    from tuneforge.pipeline import prepare_stage
    from tuneforge.train.sft import train

    losses = {}
    for name, fast in (("fast", True), ("plain", False)):
        r = tiny_recipe(
            tmp_path,
            tiny_model_dir,
            demo_subset,
            name=name,
            training={
                "packing": fast,
                "logits_at_labels_only": fast,
                "group_by_length": False,
                "max_steps": 6,
                "eval_strategy": "no",
            },
        )
        run, _ = prepare_stage(r)
        train(run)
        model, tok, _ = load_trained(run)
        losses[name] = mean_loss(model, tok, read_jsonl(run.split_file("train")))["loss"]
    assert losses["fast"] == pytest.approx(losses["plain"], rel=0.01)


@pytest.mark.parametrize("autocast", [False, True])
def test_chunked_head_loss_matches_full_logits(autocast):
    """The chunked LM-head cross-entropy gives the loss and gradients of the full-logits path."""
    from tuneforge.lm.loss import _LinearCrossEntropy

    torch.manual_seed(0)
    h = torch.randn(37, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    b = torch.randn(50, requires_grad=True)
    t = torch.randint(0, 50, (37,))
    grads = []
    for fused in (True, False):
        for x in (h, w, b):
            x.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            if fused:
                loss = _LinearCrossEntropy.apply(h, w, b, t, 8)  # 5 chunks, the last one short
            else:
                loss = torch.nn.functional.cross_entropy(
                    torch.nn.functional.linear(h, w, b).float(), t, reduction="sum"
                )
        (3 * loss).backward()
        grads.append((loss.item(), [x.grad.clone() for x in (h, w, b)]))
    (lf, gf), (lr, gr) = grads
    assert lf == pytest.approx(lr, rel=1e-5)
    # bf16: the reference accumulates the weight gradient in bf16, the chunked path in fp32
    tol = 1e-2 if autocast else 1e-5
    for a, r in zip(gf, gr):
        assert torch.allclose(a, r, rtol=tol, atol=tol * r.abs().max().item())


def test_label_loss_with_lora_under_bf16_autocast_keeps_inputs_bf16(tiny_model_dir, feats):
    """With PEFT's input cast off under autocast (memory), the LoRA loss and gradients stay those
    of the default PEFT path within bf16 tolerance."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.train.trainer import bf16_autocast

    torch.manual_seed(0)
    m = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False),
    )
    batch = PadCollator(0)(feats)
    labels = batch.pop("labels")
    out = []
    for ctx in (lambda: bf16_autocast(m, "cpu"), lambda: torch.autocast("cpu", dtype=torch.bfloat16)):
        m.zero_grad()
        with ctx():
            loss, _, _ = label_positions_loss(m, batch, labels)
        loss.backward()
        g = torch.cat([p.grad.flatten() for p in m.parameters() if p.requires_grad])
        out.append((loss.item(), g))
    assert out[0][0] == pytest.approx(out[1][0], rel=1e-2)
    cos = torch.nn.functional.cosine_similarity(out[0][1], out[1][1], dim=0)
    assert cos > 0.99
    assert all(getattr(mod, "cast_input_dtype_enabled", True) for mod in m.modules())  # restored


def test_held_out_loss_with_a_shared_system_prompt_matches_full_logits(tiny_model_dir):
    """mean_loss runs the system prompt every row shares once and repeats its KV cache; the
    loss and token accuracy are those of a plain forward per row over full logits."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.evaluate import metrics
    from tuneforge.lm.template import tokenize_messages

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    system = {"role": "system", "content": "You answer questions about the Quorvalen robot, briefly and politely."}
    rows = [
        {"messages": [system, {"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in [
            ("hi", "Hello! How can I help?"),
            ("What colour is the charging light?", "Amber while charging, green when full."),
            ("How long is the warranty on the Driftmop V4 robot vacuum?", "Two years."),
        ]
    ]
    feats = [tokenize_messages(tok, r["messages"]) for r in rows]
    assert metrics.shared_prefix_len(feats) >= 8  # the prefix path is the one under test
    total, count, hits = 0.0, 0, 0
    with torch.no_grad():
        for f in feats:
            ids = torch.tensor([f["input_ids"]])
            s, n, c = metrics.loss_and_accuracy_sums(model(input_ids=ids).logits, torch.tensor([f["labels"]]))
            total, count, hits = total + s, count + n, hits + c
    got = metrics.mean_loss(model, tok, rows, batch_size=3)
    assert got["tokens"] == count
    assert got["loss"] == pytest.approx(total / count, abs=2e-5)
    assert got["token_accuracy"] == pytest.approx(hits / count, abs=1e-5)
