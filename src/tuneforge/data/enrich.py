"""What prepare adds to the training split: paraphrases, "I don't know" rows, replay rows.

Order matters, and is fixed here:
1. augmentation rewrites the user's own training questions (never validation/test ones),
   and rewrites that near-copy a validation/test row are removed like any leak;
2. abstain rows come next, minus any question that near-copies a training question (it
   might be answerable: a refusal must never contradict a fact);
3. replay rows are last, sized against everything before (`ratio` = replay rows per
   training row), so the forgetting guard grows with the data it guards against.
Every added row carries `provenance`, and the card says how many of each were added.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..model.source import ModelSource
from ..recipe import DataConfig
from .abstain import abstain_rows, generate_questions
from .dedup import dedup_rows, remove_leaks
from .replay import ReplayCache, model_key, pool_prompts, replay_rows
from .validate import load_validated


def augment_train(train: list[dict], held_out: dict[str, list[dict]], cfg: DataConfig) -> tuple[list[dict], dict]:
    """`cfg.augment.n` rewrites per training row (rule set, or the teacher model)."""
    aug = cfg.augment
    if aug.n <= 0 or not train:
        return [], {"n": 0}
    if aug.teacher:
        from .augment import local_teacher, paraphrase_candidates

        teacher = local_teacher(aug.teacher)
        new, dropped, _ = paraphrase_candidates(train, teacher, aug.n)
        generator = teacher.name
    else:
        from .rules import RULES, augment_rows

        new, dropped = augment_rows(train, aug.n, cfg.seed, tuple(aug.rules or RULES)), Counter()
        generator = "rules"
    new = [{k: v for k, v in r.items() if k != "_line"} for r in new]
    before = len(new)
    new, _ = dedup_rows(train + new, "exact", cfg.dedup_threshold)  # a rewrite equal to a row adds nothing
    new = [r for r in new if r.get("provenance")]
    dropped["duplicate"] += before - len(new)
    if cfg.leak_check:
        parts, leaks = remove_leaks({"train": new, **held_out}, cfg.leak_threshold)
        dropped["leak"] += leaks["removed_from_train"]
        new = parts["train"]
    return new, {"n": aug.n, "generator": generator, "rows": len(new), "dropped": dict(dropped)}


def abstain_train(train: list[dict], cfg: DataConfig) -> tuple[list[dict], dict]:
    """Refusal rows from `abstain.questions` and `abstain.auto` generated questions."""
    ab = cfg.abstain
    questions: list[str] = []
    report: dict[str, Any] = {}
    if ab.questions:
        data = load_validated(ab.questions, require_assistant=False)
        questions += [next(m["content"] for m in r["messages"] if m["role"] == "user") for r in data.rows]
        report["from_file"] = {"path": ab.questions, "rows": len(data.rows), "invalid": len(data.problems)}
    if ab.auto:
        auto, report["auto"] = generate_questions(train, ab.auto, cfg.seed)
        questions += auto
    if not questions:
        return [], report
    # a question close to a training question may be answerable: drop it rather than contradict a
    # fact (compared on the question alone: the replies differ by construction)
    asked = [{"messages": [{"role": "user", "content": q}], "i": i} for i, q in enumerate(questions)]
    known = [{"messages": [m for m in r["messages"] if m["role"] == "user"][:1]} for r in train]
    parts, clash = remove_leaks({"train": asked, "validation": [k for k in known if k["messages"]]}, cfg.leak_threshold)
    keep = [questions[r["i"]] for r in parts["train"]]
    report.update(rows=len(keep), dropped_close_to_training=clash["removed_from_train"])
    return abstain_rows(keep, ab.replies, cfg.system_prompt), report


# continuous batching (lm/continuous.py): 64 slots beat 96 on the replay pass, 44.2 vs 46.5 s
def base_answerer(base: ModelSource, tokenizer: Any, batch_size: int = 64) -> Any:
    """Greedy answers of the base model (loaded on first use: a warm cache loads nothing).

    96 rows a batch, not 32: rows leave the batch as they finish, and a small batch spends its
    tail on a few long answers at matrix sizes the CPU runs at a fraction of its speed; measured
    on 96 pool prompts at 128 tokens (fp32, AVX2 kernels) 139 -> 177 tokens/s. The KV cache of
    96 rows of ~200 tokens is under 1 GB for a 135M model."""
    state: dict[str, Any] = {}

    def answer(conversations: list[list[dict]], max_new_tokens: int) -> list[tuple[str, bool]]:
        from ..lm.generate import generate
        from ..lm.load import load_model

        if "model" not in state:
            state["model"] = load_model(base.path)
        outs = generate(state["model"], tokenizer, conversations, max_new_tokens, batch_size)
        # a reply that used (nearly) the whole budget was cut off, not finished
        return [(o, len(tokenizer(o, add_special_tokens=False)["input_ids"]) < max_new_tokens - 2) for o in outs]

    return answer


def replay_train(
    n_task_rows: int, cfg: DataConfig, base: ModelSource | None, tokenizer: Any, answer: Any = None
) -> tuple[list[dict], dict]:
    rp = cfg.replay
    want = round(rp.ratio * n_task_rows)
    if want <= 0:
        return [], {"wanted": 0, "rows": 0}
    weights = base.sha256 if base is not None else "0" * 16  # an injected answerer (tests) has no weights
    key = model_key(weights, getattr(tokenizer, "chat_template", None), rp.max_new_tokens)
    cache = ReplayCache(rp.cache_dir, key)
    rows, report = replay_rows(
        want,
        pool_prompts(rp.pool),
        answer or base_answerer(base, tokenizer),
        cache,
        rp.max_new_tokens,
        cfg.seed,
        cfg.system_prompt,
    )
    return rows, {"ratio": rp.ratio, "pool_file": rp.pool or "(shipped general pool)", **report}


def replay_wanted(cfg: DataConfig, objective: str, formats: list[str]) -> bool:
    """`replay.enabled: auto` means on for SFT on chat data: raw text has no turns to answer, and
    labelled classification rows would be diluted by unlabelled general ones.

    >>> replay_wanted(DataConfig(), "sft", ["messages"]), replay_wanted(DataConfig(), "dpo", ["preference"])
    (True, False)
    >>> replay_wanted(DataConfig(), "sft", ["classification"])
    False
    """
    if cfg.replay.enabled == "auto":
        return objective == "sft" and not {"text", "classification"} & set(formats)
    return bool(cfg.replay.enabled)
