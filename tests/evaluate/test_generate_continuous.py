"""Continuous batching (lm/continuous.py): every reply is exactly what model.generate gives the
prompt on its own, while slots are refilled, the buffer is widened for a longer prompt that comes
later, and dead columns are cut."""

from __future__ import annotations

import random

import pytest
import torch


@pytest.fixture(scope="module")
def model_tok(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


WORDS = "robot warranty charge light app battery colour status reset dock clean map room floor".split()


def _prompts(tok, n, seed, system=None):
    from tuneforge.lm.generate import render

    rng = random.Random(seed)
    convs = []
    for _ in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14))) + "?"
        convs.append(([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}])
    return [tok(render(tok, c, add_generation_prompt=True), add_special_tokens=False)["input_ids"] for c in convs]


def _alone(model, tok, ids, n, stops):
    """model.generate on one prompt (no padding, no batch): the reference."""
    with torch.inference_mode():
        out = model.generate(
            input_ids=torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=tok.pad_token_id,
        )[0, len(ids) :].tolist()
    while out and out[-1] == tok.pad_token_id and tok.pad_token_id not in stops:
        out.pop()
    return out


def _stops(model, tok, rows, n):
    """Tokens some replies say early: made stop tokens, so rows end at many different steps."""
    first = [_alone(model, tok, r, n, [tok.eos_token_id]) for r in rows[:6]]
    return sorted({tok.eos_token_id, *(f[2] for f in first if len(f) > 2), *(f[5] for f in first if len(f) > 5)})


@pytest.mark.parametrize("system", [None, "You answer questions about the Quorvalen robot, briefly and politely."])
def test_continuous_replies_equal_generate_alone(model_tok, monkeypatch, system):
    from tuneforge.lm import continuous
    from tuneforge.lm.generate import common_prefix

    model, tok = model_tok
    assert continuous.supported(model)
    monkeypatch.setattr(continuous, "_DEAD_COLUMNS", 4)  # cut dead columns often
    rows = _prompts(tok, 23, seed=1, system=system)
    n = 16
    stops = _stops(model, tok, rows, n)
    p = common_prefix(rows)
    assert (p >= 8) == (system is not None)  # the shared system prompt runs once (the tiny template has no default)
    random.Random(2).shuffle(rows)  # not longest first: later, longer prompts widen the buffer
    with torch.inference_mode():
        got = continuous.greedy_continuous(model, [r[p:] for r in rows], rows[0][:p], n, stops, tok.pad_token_id, 5)
    lengths = {len(g) for g in got}
    assert len(lengths) > 3  # rows really ended at different steps, so slots were refilled
    for ids, reply in zip(rows, got):
        assert reply == _alone(model, tok, ids, n, stops)


def test_widening_and_cutting_really_happen(model_tok, monkeypatch):
    """The two column moves the test above relies on are exercised (a spy on the layer's move):
    a short prompt still decoding when a much longer one joins (the buffer widens), and rows that
    joined late once the early ones are gone (the columns left of them are cut)."""
    from tuneforge.lm import continuous

    model, tok = model_tok
    monkeypatch.setattr(continuous, "_DEAD_COLUMNS", 4)
    moves = []
    real = continuous._SlotLayer.move_columns

    def spy(self, rows, src, dst):
        moves.append("right" if dst > src.start else "left")
        return real(self, rows, src, dst)

    monkeypatch.setattr(continuous._SlotLayer, "move_columns", spy)
    short = _prompts(tok, 8, seed=3)
    long = [r + r[-12:] * 4 for r in _prompts(tok, 8, seed=4)]
    n = 12
    # a stop token the first short reply says second and the other does not say early: the first
    # row frees its slot while the second still decodes
    a, b = (_alone(model, tok, r, n, [tok.eos_token_id]) for r in short[:2])
    stop = next(t for t in a[1:] if t not in b[:6])
    stops = [tok.eos_token_id, stop]
    rows = short[:2] + long
    with torch.inference_mode():
        got = continuous.greedy_continuous(model, rows, [], n, stops, tok.pad_token_id, 2)
    assert {"right", "left"} <= set(moves)
    for ids, reply in zip(rows, got):
        assert reply == _alone(model, tok, ids, n, stops)


def test_generate_uses_one_continuous_call(model_tok, monkeypatch):
    from tuneforge.lm import continuous
    from tuneforge.lm import generate as g

    model, tok = model_tok
    calls = []
    real = continuous.greedy_continuous

    def spy(*args, **kwargs):
        calls.append(len(args[1]))
        return real(*args, **kwargs)

    monkeypatch.setattr(continuous, "greedy_continuous", spy)
    convs = [[{"role": "user", "content": f"question number {i} about the dock?"}] for i in range(11)]
    fast = g.generate(model, tok, convs, max_new_tokens=8, batch_size=4)
    assert calls == [11]
    monkeypatch.setattr(continuous, "supported", lambda model: False)
    assert g.generate(model, tok, convs, max_new_tokens=8, batch_size=4) == fast
