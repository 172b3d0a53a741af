"""Batched greedy generation with exactly the chat template used in training."""

from __future__ import annotations

from typing import Any

from .collator import shared_prefix
from .step import _cache_kwarg, _last_logits  # noqa: F401 (used here; metrics and tests import them from here)
from .template import IGNORE_INDEX, prompt_messages, render


def stop_token_ids(tokenizer: Any, model: Any) -> list[int]:
    """EOS of the tokenizer plus whatever the model's generation config stops on."""
    ids = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    return sorted(i for i in ids if i is not None)


def generate(
    model: Any, tokenizer: Any, conversations: list[list[dict]], max_new_tokens: int = 48, batch_size: int = 16
) -> list[str]:
    """Greedy replies to each conversation (the trailing assistant reply, if any, is dropped)."""
    import torch

    from . import continuous

    prompts = [render(tokenizer, prompt_messages(c), add_generation_prompt=True) for c in conversations]
    # longest first: batches of similar length waste less compute on left padding
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    eos = stop_token_ids(tokenizer, model)
    try:
        model.eval()
        if plain_greedy(model) and continuous.supported(model):
            ids = tokenizer([prompts[i] for i in order], add_special_tokens=False)["input_ids"]
            p = common_prefix(ids)
            with torch.inference_mode():
                new = continuous.greedy_continuous(
                    model, [r[p:] for r in ids], ids[0][:p], max_new_tokens, eos, tokenizer.pad_token_id, batch_size
                )
            for i, row in zip(order, new):
                out[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
            return out
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            with torch.inference_mode():
                if plain_greedy(model):
                    ids = tokenizer([prompts[i] for i in idx], add_special_tokens=False)["input_ids"]
                    new = greedy_shrinking_ids(model, ids, max_new_tokens, eos, tokenizer.pad_token_id)
                else:
                    enc = tokenizer(
                        [prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
                    )
                    enc = {k: v.to(model.device) for k, v in enc.items()}
                    gen = model.generate(
                        **enc,
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        eos_token_id=eos,
                        pad_token_id=tokenizer.pad_token_id,
                    )
                    new = gen[:, enc["input_ids"].shape[1] :]
            for i, row in zip(idx, new):
                out[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    finally:
        tokenizer.padding_side = side
    return out


def common_prefix(rows: list[list[int]], min_prefix: int = 8) -> int:
    """Length of the token prefix every row starts with, leaving each row at least one token of
    its own (its last position gives the first reply token); 0 when shorter than `min_prefix`.

    >>> common_prefix([[1, 2, 3, 4], [1, 2, 3, 9, 9]], min_prefix=2)
    3
    >>> common_prefix([[1, 2], [1, 2, 5]], min_prefix=2)
    0
    """
    if len(rows) < 2:
        return 0
    p = shared_prefix([{"input_ids": r, "labels": [IGNORE_INDEX] * len(r)} for r in rows])
    return p if p >= min_prefix else 0


def greedy_shrinking_ids(model: Any, rows: list[list[int]], max_new_tokens: int, eos: list[int], pad_id: int | None):
    """`greedy_shrinking` on unpadded token rows: the prefix all rows share (a chat template's
    system prompt: ~20 of the ~50 prompt tokens of a short question with SmolLM2's default) is
    run once and its cache copied to every row, the rest is left-padded after it."""
    import torch

    device = model.device
    p = common_prefix(rows)
    rest = [r[p:] for r in rows]
    width = max(len(r) for r in rest)
    pad = 0 if pad_id is None else pad_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rest], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rest], dtype=torch.long, device=device)
    prefix = torch.tensor(rows[0][:p], dtype=torch.long, device=device) if p else None
    return greedy_shrinking(model, ids, mask, max_new_tokens, eos, prefix=prefix)


# generation-config fields that change greedy decoding: where one is set, model.generate decodes
_PROCESSORS = {
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "min_new_tokens": None,
    "min_length": 0,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "sequence_bias": None,
}


def plain_greedy(model: Any) -> bool:
    """True when the shrinking-batch decoder below computes what `model.generate(do_sample=False)`
    would: a decoder-only model, no logits processor in its generation config, and no PEFT
    prompt learning (prefix/prompt tuning feed their virtual tokens through generate's cache)."""
    cfg = getattr(model, "generation_config", None)
    if cfg is None or getattr(model.config, "is_encoder_decoder", False):
        return False
    peft = getattr(model, "active_peft_config", None)
    if peft is not None and getattr(peft, "is_prompt_learning", False):
        return False
    return all(getattr(cfg, k, d) in (d, None) for k, d in _PROCESSORS.items())


def greedy_shrinking(
    model: Any, input_ids: Any, attention_mask: Any, max_new_tokens: int, eos: list[int], prefix: Any = None
) -> list:
    """Greedy decoding of a left-padded batch that drops each row from the batch (and its KV cache)
    as soon as it emits a stop token: `model.generate` keeps computing finished rows until the
    longest one ends, so a batch of short tuned answers paid for its one rambling straggler.
    Returns the new token ids per row, the stop token included (decoded with special tokens
    skipped, as generate's output is). `prefix`: token ids every row starts with, which
    `input_ids` (left-padded) then leave out: they run once, as a batch of one, and the cache
    is repeated for every row; the rows' padding then sits between prefix and text, masked."""
    import torch
    from transformers import DynamicCache

    n = input_ids.shape[0]
    out: list[list[int]] = [[] for _ in range(n)]
    rows = torch.arange(n, device=input_ids.device)
    mask = attention_mask
    position = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    # the model's config gives the cache its layer kinds (sliding-window layers keep only their window)
    cache = DynamicCache(config=getattr(model, "config", None))
    stop = torch.tensor(eos, dtype=torch.long, device=input_ids.device)
    next_logits = _last_logits(model, cache)
    if prefix is not None and prefix.numel():
        p = prefix.numel()
        next_logits(prefix[None], mask.new_ones(1, p), torch.arange(p, device=prefix.device)[None])
        cache.batch_repeat_interleave(n)
        mask = torch.cat([mask.new_ones(n, p), mask], dim=1)
        position = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)[:, p:]
    logits = next_logits(input_ids, mask, position)
    last = position[:, -1:]
    for step in range(max_new_tokens):
        token = logits.argmax(-1)
        for r, t in zip(rows.tolist(), token.tolist()):
            out[r].append(t)
        if step == max_new_tokens - 1:
            break
        keep = (~torch.isin(token, stop)).nonzero().reshape(-1)
        if keep.numel() == 0:
            break
        if keep.numel() < rows.numel():  # rows that stopped leave the batch, their cache with them
            rows, token, mask, last = rows[keep], token[keep], mask[keep], last[keep]
            cache.batch_select_indices(keep)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        last = last + 1
        logits = next_logits(token[:, None], mask, last)
    return [torch.tensor(o, dtype=torch.long) for o in out]


def greedy_token_ids(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int) -> list[list[int]]:
    """Greedy new-token ids per user prompt, one prompt at a time (no padding effects)."""
    import torch

    eos = stop_token_ids(tokenizer, model)
    res = []
    model.eval()
    for p in prompts:
        text = render(tokenizer, [{"role": "user", "content": p}], add_generation_prompt=True)
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id,
            )
        res.append(gen[0, enc["input_ids"].shape[1] :].tolist())
    return res
