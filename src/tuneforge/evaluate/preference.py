"""Preference metrics on held-out pairs: does the model prefer the chosen answer?

- Policy preference accuracy: the share of pairs where
  log p(chosen | prompt) > log p(rejected | prompt) (summed over the answer's tokens,
  end-of-turn included, under the training chat template).
- Implicit-reward accuracy (DPO's reward, relative to a reference model):
  [log p(chosen) − log p_ref(chosen)] − [log p(rejected) − log p_ref(rejected)] > 0.
- Reward-model pairwise accuracy: reward(chosen) > reward(rejected).

Pairs come from prepared rows with a `rejected` extra (prompt/chosen/rejected data), or
from unpaired KTO rows: a desirable and an undesirable answer to the same prompt form a pair.
"""

from __future__ import annotations

import time
from typing import Any

from ..data.formats import to_preference
from ..io import atomic_write_json, atomic_write_text, read_jsonl
from ..lm.template import tokenize_messages
from ..run import RunDir


def _clean(msgs: list[dict]) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def _key(msgs: list[dict]) -> tuple:
    return tuple((m["role"], m["content"]) for m in msgs)


def pairs_from_rows(rows: list[dict]) -> list[dict]:
    """prompt/chosen/rejected pairs (conversational) from prepared rows.

    >>> rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}], "label": True},
    ...         {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}], "label": False}]
    >>> [p["chosen"][0]["content"] + "/" + p["rejected"][0]["content"] for p in pairs_from_rows(rows)]
    ['good/bad']
    """
    pairs, good, bad = [], {}, {}
    for row in rows:
        if "rejected" in row:
            p = to_preference(row)
            pairs.append(
                {"prompt": _clean(p["prompt"]), "chosen": _clean(p["chosen"]), "rejected": _clean(p["rejected"])}
            )
        elif "label" in row and isinstance(row["label"], bool):
            p = to_preference({**row, "rejected": []})
            side = good if row["label"] else bad
            side.setdefault(_key(p["prompt"]), (p["prompt"], []))[1].append(p["chosen"])
    for key, (prompt, chosen) in good.items():
        for c in chosen:
            for r in bad.get(key, (None, []))[1]:
                pairs.append({"prompt": _clean(prompt), "chosen": _clean(c), "rejected": _clean(r)})
    return pairs


def completion_logps(
    model: Any, tokenizer: Any, prompts: list[list[dict]], completions: list[list[dict]], batch_size: int = 8
) -> list[float]:
    """Sum of log p(completion tokens | prompt) per sample (only the completion's turns count)."""
    import torch

    from ..lm.loss import labelled_logits
    from ..lm.template import IGNORE_INDEX

    encoded = []
    for prompt, completion in zip(prompts, completions):
        # earlier assistant turns in the prompt are context, not part of the scored answer
        msgs = [{**m, "weight": 0} if m["role"] == "assistant" else m for m in prompt] + list(completion)
        encoded.append(tokenize_messages(tokenizer, msgs, "assistant"))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(encoded), batch_size):
            chunk = encoded[i : i + batch_size]
            longest = max(len(e["input_ids"]) for e in chunk)
            ids = torch.tensor([e["input_ids"] + [pad] * (longest - len(e["input_ids"])) for e in chunk], device=device)
            labels = torch.tensor(
                [e["labels"] + [IGNORE_INDEX] * (longest - len(e["labels"])) for e in chunk], device=device
            )
            mask = torch.tensor(
                [[1] * len(e["input_ids"]) + [0] * (longest - len(e["input_ids"])) for e in chunk], device=device
            )
            logits, targets, _ = labelled_logits(model, {"input_ids": ids, "attention_mask": mask}, labels)
            lp = torch.log_softmax(logits.float(), -1).gather(1, targets[:, None]).squeeze(1)
            counts = (labels[:, 1:] != IGNORE_INDEX).sum(1).tolist()
            out += [float(s.sum()) for s in torch.split(lp, counts)]
    return out


def pair_logps(model: Any, tokenizer: Any, pairs: list[dict], batch_size: int = 8) -> dict[str, list[float]]:
    """{'chosen': [...], 'rejected': [...]} summed completion log-probs of every pair."""
    prompts = [p["prompt"] for p in pairs]
    return {
        side: completion_logps(model, tokenizer, prompts, [p[side] for p in pairs], batch_size)
        for side in ("chosen", "rejected")
    }


def accuracy(chosen: list[float], rejected: list[float], ref: dict[str, list[float]] | None = None) -> dict:
    """Share of pairs with a positive margin (chosen − rejected, minus the reference's margin if given).

    >>> accuracy([-1.0, -5.0, -2.0], [-2.0, -4.0, -3.0])
    {'accuracy': 0.6667, 'mean_margin': 0.3333, 'pairs': 3}
    >>> accuracy([-1.0], [-2.0], ref={"chosen": [-1.0], "rejected": [-3.0]})["accuracy"]
    0.0
    """
    margins = [c - r for c, r in zip(chosen, rejected)]
    if ref is not None:
        margins = [m - (c - r) for m, c, r in zip(margins, ref["chosen"], ref["rejected"])]
    n = len(margins)
    return {
        "accuracy": round(sum(m > 0 for m in margins) / n, 4) if n else None,
        "mean_margin": round(sum(margins) / n, 4) if n else None,
        "pairs": n,
    }


def preference_report(scores: dict[str, dict[str, list[float]]]) -> dict:
    """Per model variant (base/tuned): policy preference accuracy; with both, the tuned model's
    implicit-reward accuracy relative to the base (DPO's reward) and the accuracy gain."""
    out: dict[str, Any] = {m: accuracy(s["chosen"], s["rejected"]) for m, s in scores.items()}
    if "base" in scores and "tuned" in scores:
        out["implicit_reward"] = accuracy(scores["tuned"]["chosen"], scores["tuned"]["rejected"], ref=scores["base"])
        out["accuracy_gain"] = round(out["tuned"]["accuracy"] - out["base"]["accuracy"], 4)
    return out


def markdown(pref: dict, title: str = "Preference (held-out pairs)") -> str:
    """A report.md section for preference results."""
    lines = [f"## {title}", "", "| model | accuracy | mean margin | pairs |", "|---|---|---|---|"]
    for name in ("base", "tuned", "implicit_reward", "reward_model"):
        if name in pref:
            r = pref[name]
            lines.append(f"| {name.replace('_', ' ')} | {r['accuracy']:.1%} | {r['mean_margin']:+.3f} | {r['pairs']} |")
    if "accuracy_gain" in pref:
        lines += [
            "",
            f"Tuned − base: {pref['accuracy_gain'] * 100:+.1f} points. Policy accuracy: log p(chosen) > "
            "log p(rejected); implicit reward: the tuned model's margin minus the base model's (DPO's reward).",
        ]
    return "\n".join(lines) + "\n"


def append_markdown(eval_dir: Any, pref: dict | None) -> None:
    """Add the preference section to an already written report.md."""
    if not pref:
        return
    path = eval_dir / "report.md"
    atomic_write_text(path, path.read_text(encoding="utf-8") + "\n" + markdown(pref))


def evaluate_reward(run: RunDir, cfg: Any = None) -> dict:
    """A reward run's evaluation: pairwise accuracy of its scores on the held-out test pairs.

    Generation suites do not apply to a scorer. Writes eval/report.{json,md}.
    """
    from ..train.rewards import load_reward_fn

    run.require()
    cfg = cfg or run.recipe().evaluation
    t0 = time.time()
    pairs = pairs_from_rows(read_jsonl(run.split_file("test"))[: cfg.max_examples])
    if not pairs:
        raise ValueError(
            f"{run.split_file('test')}: no held-out preference pairs to score the reward model on — "
            f"give data.test pairs or a data.test_fraction > 0"
        )
    run.stage_started("evaluate")
    try:
        rm = load_reward_fn(run.path, batch_size=cfg.batch_size)
        prompts = [p["prompt"] for p in pairs]
        chosen = rm(prompts, [p["chosen"] for p in pairs])
        rejected = rm(prompts, [p["rejected"] for p in pairs])
    except BaseException as exc:
        run.stage_finished("evaluate", "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    result = accuracy(chosen, rejected)
    samples = [
        {
            "suite": "reward",
            "prompt": p["prompt"][-1]["content"],
            "chosen": p["chosen"][-1]["content"],
            "rejected": p["rejected"][-1]["content"],
            "reward_chosen": round(c, 4),
            "reward_rejected": round(r, 4),
        }
        for p, c, r in zip(pairs, chosen, rejected)
    ]
    report = {
        "run": run.path.name,
        "models": ["reward_model"],
        "task": {"tuned": {"pairwise_accuracy": result["accuracy"]}},
        "preference": {"reward_model": result},
        "samples": samples,
        "seconds": round(time.time() - t0, 1),
        "note": "reward model: pairwise accuracy only (no generation suites; evaluation.gates are not applied)",
    }
    atomic_write_json(run.eval_dir / "report.json", report)
    atomic_write_text(
        run.eval_dir / "report.md",
        f"# Evaluation: {run.path.name} (reward model)\n\n"
        + markdown(report["preference"], "Pairwise accuracy (held-out pairs)")
        + f"\nreward(chosen) > reward(rejected) on {result['pairs']} pairs; chance is 50%.\n",
    )
    run.stage_finished(
        "evaluate",
        metrics={
            "pairwise_accuracy": result["accuracy"],
            "mean_margin": result["mean_margin"],
            "pairs": result["pairs"],
        },
        seconds=report["seconds"],
    )
    return report
