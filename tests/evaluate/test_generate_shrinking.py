"""The batch-at-a-time decoder that drops finished rows gives what model.generate gives
(the continuous one: test_generate_continuous.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def model_tok(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


CONVERSATIONS = [
    [{"role": "user", "content": "What is the Quorvalen app called?"}],
    [{"role": "user", "content": "hi"}],
    [{"role": "user", "content": "Tell me, in a long and winding way, how the warranty on a robot works."}],
    [{"role": "user", "content": "Which colour is the status light when it charges?"}],
    [{"role": "user", "content": "ok"}],
]


def _with_generate(monkeypatch, fn):
    from tuneforge.lm import generate as g

    monkeypatch.setattr(g, "plain_greedy", lambda model: False)
    return fn()


def test_same_replies_as_model_generate(model_tok, monkeypatch):
    from tuneforge.lm import generate as g

    model, tok = model_tok
    assert g.plain_greedy(model)
    eos = tok.eos_token_id
    fast = g.generate(model, tok, CONVERSATIONS, max_new_tokens=12, batch_size=5)
    slow = _with_generate(monkeypatch, lambda: g.generate(model, tok, CONVERSATIONS, max_new_tokens=12, batch_size=5))
    assert fast == slow
    enc = tok(
        [g.render(tok, c, add_generation_prompt=True) for c in CONVERSATIONS],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
        padding_side="left",
    )
    with torch.inference_mode():
        ref = model.generate(
            **enc, max_new_tokens=12, do_sample=False, eos_token_id=[eos], pad_token_id=tok.pad_token_id
        )
    ref_rows = ref[:, enc["input_ids"].shape[1] :]
    # the tiny model rarely says EOS on its own: make what some rows say at step 3 stop tokens, so
    # rows end at different steps and leave the batch while others go on
    stops = sorted({int(r[3]) for r in ref_rows})[:2]
    with torch.inference_mode():
        got = g.greedy_shrinking(model, enc["input_ids"], enc["attention_mask"], 12, [eos, *stops])
        want = model.generate(
            **enc, max_new_tokens=12, do_sample=False, eos_token_id=[eos, *stops], pad_token_id=tok.pad_token_id
        )[:, enc["input_ids"].shape[1] :]
    lengths = {len(r) for r in got}
    assert len(lengths) > 1  # rows really left the batch at different steps
    for row, full in zip(got, want):
        assert row.tolist() == full[: len(row)].tolist()
        rest = full[len(row) :].tolist()
        assert all(t == tok.pad_token_id for t in rest)  # generate pads a finished row


def test_shared_prefix_runs_once_and_replies_stay_the_same(model_tok, monkeypatch):
    """A system prompt every conversation shares is prefilled once (batch of one, cache copied
    to every row): the replies are model.generate's, row for row."""
    from tuneforge.lm import generate as g

    model, tok = model_tok
    system = {"role": "system", "content": "You answer questions about the Quorvalen robot, briefly and politely."}
    convs = [[system, *c] for c in CONVERSATIONS]
    rows = tok([g.render(tok, c, add_generation_prompt=True) for c in convs], add_special_tokens=False)["input_ids"]
    assert g.common_prefix(rows) >= 8  # the case under test: the prefix is really shared
    seen = []
    real = g.greedy_shrinking

    def spy(model, ids, mask, n, eos, prefix=None):
        seen.append(None if prefix is None else prefix.numel())
        return real(model, ids, mask, n, eos, prefix=prefix)

    monkeypatch.setattr(g, "greedy_shrinking", spy)
    # the batch-at-a-time path (models whose cache has sliding-window layers take it)
    monkeypatch.setattr("tuneforge.lm.continuous.supported", lambda model: False)
    fast = g.generate(model, tok, convs, max_new_tokens=12, batch_size=5)
    assert seen == [g.common_prefix(rows)]
    slow = _with_generate(monkeypatch, lambda: g.generate(model, tok, convs, max_new_tokens=12, batch_size=5))
    assert fast == slow


def test_processors_in_the_generation_config_fall_back_to_generate(model_tok):
    from tuneforge.lm.generate import plain_greedy

    model, _ = model_tok
    model.generation_config.repetition_penalty = 1.3
    try:
        assert not plain_greedy(model)
    finally:
        model.generation_config.repetition_penalty = 1.0


def test_head_applied_apart_gives_the_models_logits_with_and_without_an_adapter(tiny_model_dir):
    """The decoder-then-`W @ h.T` step equals the model's own last-position logits, also
    through a PEFT wrapper with a trained-looking (non-zero) LoRA and once it is merged."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DynamicCache

    from tuneforge.lm.generate import _last_logits

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    peft = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    ids = torch.randint(5, 100, (3, 7))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # a left-padded row
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    for model in (base, peft):
        for merged in (False, True):
            if merged and model is peft:
                model.merge_adapter()
            with torch.inference_mode():
                want = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
                got = _last_logits(model, DynamicCache(config=model.config))(ids, mask, pos)
            assert torch.allclose(got, want, atol=1e-5), (model is peft, merged)
