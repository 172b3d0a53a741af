"""Rewards for RL objectives (ppo, grpo): a trained reward model, or built-in functions by name.

Every reward here has the same call shape, which is also TRL's reward-function shape:

    reward(prompts, completions, **row_fields) -> list[float]

`prompts` holds one conversation (list of {"role", "content"}) or one plain string per
sample; `completions` holds one string per sample, or TRL's conversational form (a list
holding the assistant message). `row_fields` are the dataset's extra columns, one value
per sample (e.g. `expected`), which TRL passes as keyword arguments.

The reward-model contract (written by `train/reward.py`): `<run>/model` is a plain
`AutoModelForSequenceClassification` folder (num_labels=1, pad token set) with its
tokenizer; the score of a sample is the logit at the last token of
chat_template(prompt + [assistant: completion]) — exactly how TRL's RewardTrainer
tokenises conversational pairs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import TuneforgeError

RewardFn = Callable[..., list[float]]


class RewardError(TuneforgeError, ValueError):
    pass


# --------------------------------------------------------------------------- shapes


def as_messages(prompt: Any) -> list[dict]:
    """A prompt as a conversation: a string becomes one user turn.

    >>> as_messages("Hi?")
    [{'role': 'user', 'content': 'Hi?'}]
    """
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def completion_text(completion: Any) -> str:
    """The text of a completion given as a string or as TRL's [{"role": "assistant", ...}] list.

    >>> completion_text([{"role": "assistant", "content": "Hello"}])
    'Hello'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))


# --------------------------------------------------------------------------- built-in functions


def contains_expected(prompts: list, completions: list, expected: list | None = None, **_: Any) -> list[float]:
    """1.0 when the completion contains every expected string (case-insensitive), else the share found.

    Rows carry `expected` as a string or a list of strings (the demo test rows do); a
    sample without one scores 0.0, so the function never rewards what it cannot check.

    >>> contains_expected(["q", "q"], ["It is Hearthlink.", "No idea"], expected=[["Hearthlink"], "hearthlink"])
    [1.0, 0.0]
    """
    if expected is None:
        raise RewardError(
            "reward function 'contains_expected' needs an 'expected' field in the data rows "
            "(a string or a list of strings per row)"
        )
    out = []
    for completion, exp in zip(completions, expected):
        wanted = [exp] if isinstance(exp, str) else list(exp or [])
        text = completion_text(completion).lower()
        out.append(sum(w.lower() in text for w in wanted) / len(wanted) if wanted else 0.0)
    return out


def brevity(prompts: list, completions: list, target_words: int = 30, **_: Any) -> list[float]:
    """1.0 up to `target_words` words, falling linearly to 0.0 at twice that length.

    >>> brevity(["q", "q", "q"], ["short answer", " ".join(["w"] * 45), " ".join(["w"] * 90)])
    [1.0, 0.5, 0.0]
    """
    out = []
    for completion in completions:
        n = len(completion_text(completion).split())
        out.append(max(0.0, min(1.0, 2.0 - n / target_words)))
    return out


def no_repetition(prompts: list, completions: list, n: int = 3, **_: Any) -> list[float]:
    """Share of distinct word n-grams (1.0 = no n-gram repeats); degenerate loops score low.

    >>> no_repetition(["q", "q"], ["a b c d", "x y x y x y x y"])
    [1.0, 0.333]
    """
    out = []
    for completion in completions:
        words = completion_text(completion).split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        out.append(round(len(set(grams)) / len(grams), 3) if grams else 1.0)
    return out


_STOPPED = re.compile(r"[.!?)\]\"'`]\s*$")


def ends_cleanly(prompts: list, completions: list, **_: Any) -> list[float]:
    """1.0 when the completion ends like a finished sentence (not cut off mid-word by the token budget).

    >>> ends_cleanly(["q", "q"], ["Done.", "and then the"])
    [1.0, 0.0]
    """
    return [1.0 if _STOPPED.search(completion_text(c)) else 0.0 for c in completions]


REWARD_FUNCTIONS: dict[str, RewardFn] = {
    "contains_expected": contains_expected,
    "brevity": brevity,
    "no_repetition": no_repetition,
    "ends_cleanly": ends_cleanly,
}


def reward_function(name: str) -> RewardFn:
    """A built-in reward function by name (recipe `objective.reward_functions`)."""
    if name not in REWARD_FUNCTIONS:
        raise RewardError(
            f"objective.reward_functions: unknown reward function {name!r} — available: {', '.join(REWARD_FUNCTIONS)}"
        )
    return REWARD_FUNCTIONS[name]


# --------------------------------------------------------------------------- reward model


def reward_model_dir(path: str | Path) -> Path:
    """The seq-cls model folder of a reward run (`<run>/model`), or `path` itself if it is one."""
    p = Path(path)
    for cand in (p / "model", p):
        if (cand / "config.json").is_file():
            return cand
    raise RewardError(
        f"{p}: no reward model found (expected {p}/model/config.json) — train one with a recipe whose "
        f"objective.kind is reward (see recipes/objective-reward.yaml)"
    )


class RewardModel:
    """A trained reward model as a reward function: `rm(prompts, completions) -> list[float]`.

    Scores are computed in batches under no_grad; `.model` and `.tokenizer` are exposed for
    callers that need them (e.g. to move the model to a device).
    """

    __name__ = "reward_model"  # TRL logs reward functions by __name__

    def __init__(
        self, path: str | Path, batch_size: int = 16, device: str | None = None, trust_remote_code: bool = False
    ):
        import torch
        from transformers import AutoModelForSequenceClassification

        from ..lm.load import load_pretrained, load_tokenizer, offline

        offline()
        folder = reward_model_dir(path)
        self.path = folder
        self.tokenizer = load_tokenizer(str(folder), trust_remote_code)
        self.model = load_pretrained(  # custom code only with the operator's opt-in; safetensors only
            AutoModelForSequenceClassification, str(folder), trust_remote_code, dtype=torch.float32
        )
        if self.model.config.num_labels != 1:
            raise RewardError(f"{folder}: num_labels={self.model.config.num_labels}, a reward model has exactly 1")
        if self.model.config.pad_token_id is None:
            # seq-cls models find the last real token through pad_token_id
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.eval()
        if device:
            self.model.to(device)
        self.batch_size = batch_size

    def texts(self, prompts: list, completions: list) -> list[str]:
        from ..lm.template import render

        return [
            render(self.tokenizer, as_messages(p) + [{"role": "assistant", "content": completion_text(c)}])
            for p, c in zip(prompts, completions)
        ]

    def __call__(self, prompts: list, completions: list, **_: Any) -> list[float]:
        import torch

        if len(prompts) != len(completions):
            raise RewardError(f"reward model: {len(prompts)} prompts but {len(completions)} completions")
        texts = self.texts(prompts, completions)
        device = next(self.model.parameters()).device
        scores: list[float] = []
        self.tokenizer.padding_side = "right"
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                # the rendered template already holds every special token the model saw in training
                enc = self.tokenizer(
                    texts[i : i + self.batch_size], return_tensors="pt", padding=True, add_special_tokens=False
                ).to(device)
                logits = self.model(**enc).logits.float()
                scores += logits[:, 0].tolist()
        return scores


def load_reward_fn(run_dir: str | Path, batch_size: int = 16, device: str | None = None) -> RewardModel:
    """The reward model of a reward run as `fn(prompts, completions) -> list[float]`.

    >>> # rm = load_reward_fn("runs/reward-demo"); rm(["What is the app called?"], ["Hearthlink."])
    """
    return RewardModel(run_dir, batch_size=batch_size, device=device)


def combined_reward(run_dir: str | Path | None, names: list[str]) -> list[RewardFn]:
    """The reward functions an RL recipe asks for: the reward model (if any), then the named ones."""
    fns: list[RewardFn] = [load_reward_fn(run_dir)] if run_dir else []
    fns += [reward_function(n) for n in names]
    if not fns:
        raise RewardError(
            "no reward: set objective.reward_model (a reward run directory) and/or "
            f"objective.reward_functions (any of: {', '.join(REWARD_FUNCTIONS)})"
        )
    return fns
