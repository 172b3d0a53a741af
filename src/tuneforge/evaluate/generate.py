"""Batched greedy generation with exactly the chat template used in training."""

from __future__ import annotations

from typing import Any

from ..data.template import prompt_messages, render


def stop_token_ids(tokenizer: Any, model: Any) -> list[int]:
    """EOS of the tokenizer plus whatever the model's generation config stops on."""
    ids = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    return sorted(i for i in ids if i is not None)


def generate(model: Any, tokenizer: Any, conversations: list[list[dict]], max_new_tokens: int = 48,
             batch_size: int = 16) -> list[str]:
    """Greedy replies to each conversation (the trailing assistant reply, if any, is dropped)."""
    import torch

    prompts = [render(tokenizer, prompt_messages(c), add_generation_prompt=True) for c in conversations]
    # longest first: batches of similar length waste less compute on left padding
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    out: list[str] = [""] * len(prompts)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    eos = stop_token_ids(tokenizer, model)
    try:
        model.eval()
        for start in range(0, len(order), batch_size):
            idx = order[start: start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            with torch.inference_mode():
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                                     pad_token_id=tokenizer.pad_token_id)
            new = gen[:, enc["input_ids"].shape[1]:]
            for i, row in zip(idx, new):
                out[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    finally:
        tokenizer.padding_side = side
    return out


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
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                                 pad_token_id=tokenizer.pad_token_id)
        res.append(gen[0, enc["input_ids"].shape[1]:].tolist())
    return res
