"""LLM-as-judge: pairwise preference between two runs' answers, judged in both orders.

A judge is any function prompt -> reply. Two are built in: an OpenAI-compatible endpoint
(e.g. `tuneforge serve`, vLLM, llama.cpp server; stdlib HTTP, nothing downloaded) and a
local model folder or run directory loaded with transformers.

Every pair is judged twice with the answers swapped. A verdict counts only when both
orders agree; when the judge picks the same *position* twice, that is position bias and
the pair counts as a tie. Win rate and its Wilson interval are over decided pairs.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..io import atomic_write_json
from .compare import load_evaluation
from .review import pair_answers, wilson_interval

Judge = Callable[[str], str]

JUDGE_TEMPLATE = """You are grading two answers to the same question. Judge correctness first, then \
helpfulness and clarity. Ignore answer length and order.

Question: {question}
{reference}
Answer 1: {first}

Answer 2: {second}

Which answer is better? Reply with exactly one of: 1, 2, tie."""


def judge_prompt(question: str, first: str, second: str, expected: list[str] | None = None) -> str:
    """The judging prompt; the expected facts, when known, are shown as a reference."""
    ref = f"Reference facts: {', '.join(expected)}\n" if expected else ""
    return JUDGE_TEMPLATE.format(question=question, reference=ref, first=first, second=second)


def parse_verdict(text: str) -> str | None:
    """'1', '2' or 'tie' from a judge's reply; None when it says none of them.

    >>> parse_verdict("Answer 2 is better."), parse_verdict("TIE"), parse_verdict("**1**")
    ('2', 'tie', '1')
    """
    t = text.strip().lower()
    if re.search(r"\btie\b|\bequal(ly)?\b|\bboth\b", t[:80]):
        return "tie"
    m = re.search(r"(?<!\d)(?<!\d\.)([12])(?!\.?\d)", t)  # a lone 1 or 2, not part of "1.5" or "12"
    return m.group(1) if m else None


def judge_pair(judge: Judge, question: str, a: str, b: str, expected: list[str] | None = None) -> dict[str, Any]:
    """Judge (a, b) and (b, a); the winner is 'a', 'b' or 'tie' (disagreement counts as a tie).

    >>> judge_pair(lambda p: "1", "q", "x", "y")["winner"]  # always the first position: bias, not preference
    'tie'
    """
    v1 = parse_verdict(judge(judge_prompt(question, a, b, expected)))
    v2 = parse_verdict(judge(judge_prompt(question, b, a, expected)))
    first = {"1": "a", "2": "b"}.get(v1 or "", "tie")
    second = {"1": "b", "2": "a"}.get(v2 or "", "tie")
    winner = first if first == second else "tie"
    return {"verdicts": [v1, v2], "winner": winner, "consistent": first == second}


def judge_runs(
    run_a: str | Path,
    run_b: str | Path,
    judge: Judge,
    suites: tuple[str, ...] = ("task",),
    limit: int | None = None,
    judge_name: str = "judge",
) -> dict[str, Any]:
    """Judge run A's tuned answers against run B's (or 'base'); writes eval/judge-<B>.json in A."""
    _, sam_a = load_evaluation(run_a)
    model_b, sam_b = ("base", sam_a) if str(run_b) == "base" else ("tuned", load_evaluation(run_b)[1])
    pairs = pair_answers(sam_a, sam_b, "tuned", model_b, suites)[:limit]
    items = []
    for p in pairs:
        same = p["a"].strip() == p["b"].strip()
        res = (
            {"verdicts": [], "winner": "tie", "consistent": True}
            if same
            else judge_pair(judge, p["question"], p["a"], p["b"], p.get("expected"))
        )
        items.append({**p, **res})
    wins_a = sum(i["winner"] == "a" for i in items)
    wins_b = sum(i["winner"] == "b" for i in items)
    low, high = wilson_interval(wins_a, wins_a + wins_b)
    out = {
        "a": Path(run_a).name,
        "b": str(run_b) if model_b == "base" else Path(run_b).name,
        "judge": judge_name,
        "pairs": len(items),
        "wins_a": wins_a,
        "wins_b": wins_b,
        "ties": len(items) - wins_a - wins_b,
        "inconsistent": sum(not i["consistent"] for i in items),
        "win_rate_a": wins_a / (wins_a + wins_b) if wins_a + wins_b else None,
        "ci95": [low, high],
        "items": items,
    }
    name = "base" if model_b == "base" else Path(run_b).name
    atomic_write_json(Path(run_a) / "eval" / f"judge-{name}.json", out)
    return out


# --------------------------------------------------------------------------- backends


def openai_judge(base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 120.0) -> Judge:
    """A judge behind an OpenAI-compatible /chat/completions endpoint (temperature 0)."""
    url = base_url.rstrip("/") + (
        "/chat/completions" if base_url.rstrip("/").endswith("/v1") else "/v1/chat/completions"
    )
    key = os.environ.get(api_key_env)

    def ask(prompt: str) -> str:
        body = json.dumps(
            {"model": model, "temperature": 0, "max_tokens": 8, "messages": [{"role": "user", "content": prompt}]}
        ).encode()
        req = urllib.request.Request(
            url,
            data=body,
            headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())["choices"][0]["message"]["content"] or ""

    return ask


def local_judge(path: str | Path, max_new_tokens: int = 8) -> Judge:
    """A judge from a local model folder, or a trained run directory, with its chat template."""
    from ..lm.generate import generate
    from ..lm.load import load_model, load_tokenizer

    p = Path(path)
    if (p / "manifest.json").is_file():
        from ..model.load import load_trained
        from ..run import RunDir

        model, tok, _ = load_trained(RunDir(p))
    else:
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a model folder (config.json) or run directory (manifest.json)")
        tok, model = load_tokenizer(str(p)), load_model(str(p))

    def ask(prompt: str) -> str:
        return generate(model, tok, [[{"role": "user", "content": prompt}]], max_new_tokens, 1)[0]

    return ask
