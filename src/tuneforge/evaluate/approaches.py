"""`tuneforge compare-approaches`: prompt-only, few-shot, RAG, fine-tuned, fine-tuned + RAG.

Every approach answers the run's held-out test split one request at a time (what a
user waits for), with batch-1 greedy decoding from `evaluate.generate`; latency per
request includes retrieval (embedding the question + FAISS search) for the RAG
approaches. Prompt tokens per request are the rendered chat prompt's tokens, the cost
that grows with few-shot examples and retrieved passages. Accuracy is the evaluation's
fact accuracy (`suites.score_task`).

The knowledge-update check (`--update FILE`) copies the index, rewrites facts in its
documents, re-indexes only what changed, and asks the affected questions again: RAG
answers with the new fact at once; the fine-tuned model still says the old one.
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from ..errors import TuneforgeError
from ..io import atomic_write_jsonl, read_jsonl
from ..lm.generate import generate
from ..lm.template import prompt_messages, render
from ..rag.index import KnowledgeIndex
from ..rag.retrieve import Passage, Retriever, augment_messages
from ..run import RunDir
from .runner import _base_context, _merged
from .suites import score_task, spread_sample
from .text_metrics import contains_all, expected_of, question_of, reference_of

APPROACHES = ("base", "base+few-shot", "base+rag", "fine-tuned", "fine-tuned+rag")


class UpdateFileError(TuneforgeError, ValueError):
    pass


# --------------------------------------------------------------------------- prompts


def few_shot_pool(train_rows: list[dict], size: int = 24) -> list[dict]:
    """Training examples spread over the file (a fixed pool; each question draws from it)."""
    return spread_sample([r for r in train_rows if reference_of(r) and question_of(r)], size)


def with_few_shot(messages: list[dict], pool: list[dict], k: int, expected: list[str] | None) -> list[dict]:
    """`k` example exchanges before the last user turn; examples that state the asked fact are
    skipped, so few-shot shows the format without leaking the answer.

    >>> pool = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
    ...         for i in range(3)]
    >>> [m["content"] for m in with_few_shot([{"role": "user", "content": "Q"}], pool, 2, ["a0"])]
    ['q1', 'a1', 'q2', 'a2', 'Q']
    """
    shots = [r for r in pool if not (expected and contains_all(reference_of(r) or "", expected))][:k]
    turns = [
        m
        for r in shots
        for m in ({"role": "user", "content": question_of(r)}, {"role": "assistant", "content": reference_of(r)})
    ]
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return messages[:last] + turns + messages[last:]


def prompt_tokens(tokenizer: Any, messages: list[dict]) -> int:
    text = render(tokenizer, prompt_messages(messages), add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


# --------------------------------------------------------------------------- running


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def run_approach(
    model: Any,
    tokenizer: Any,
    rows: list[dict],
    build: Callable[[dict], tuple[list[dict], list]],
    max_new_tokens: int,
    batch_size: int = 1,
    latency_requests: Optional[int] = None,
) -> dict:
    """Answer the rows, score the answers, and time requests one at a time.

    batch_size 1: every row is a timed request and its answer is scored. Larger batches
    answer all rows in batches (for accuracy, much faster on a shared CPU) and time
    `latency_requests` rows (spread over the set) one at a time, as a user would send them.
    """
    generate(model, tokenizer, [[{"role": "user", "content": "Hello"}]], 2, batch_size=1)  # warm-up, not timed
    convs, retrieval, cites, found = [], [], [], []
    for row in rows:
        t0 = time.perf_counter()
        msgs, passages = build(row)
        retrieval.append((time.perf_counter() - t0) * 1000)
        convs.append(msgs)
        cites.append([p.citation() for p in passages])
        found.append(any(contains_all(p.text, expected_of(row) or ["\0"]) for p in passages))
    timed = (
        range(len(rows))
        if batch_size <= 1
        else [rows.index(r) for r in spread_sample(rows, latency_requests or len(rows))]
    )
    outputs: list[str] = [""] * len(rows)
    latency = []
    for i in timed:  # one request: retrieval (measured above) + generation
        t0 = time.perf_counter()
        outputs[i] = generate(model, tokenizer, [convs[i]], max_new_tokens, batch_size=1)[0]
        latency.append(retrieval[i] + (time.perf_counter() - t0) * 1000)
    if batch_size > 1:
        outputs = generate(model, tokenizer, convs, max_new_tokens, batch_size=batch_size)
    ptoks = [prompt_tokens(tokenizer, m) for m in convs]
    ctoks = [len(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outputs]
    score = score_task(outputs, rows)
    res = {
        "examples": len(rows),
        "fact_accuracy": score["fact_accuracy"],
        "token_f1": score["token_f1"],
        "latency_ms_mean": round(statistics.fmean(latency), 1),
        "latency_ms_p50": round(_pct(latency, 0.5), 1),
        "latency_ms_p95": round(_pct(latency, 0.95), 1),
        "retrieval_ms_mean": round(statistics.fmean(retrieval), 2),
        "prompt_tokens_mean": round(statistics.fmean(ptoks), 1),
        "completion_tokens_mean": round(statistics.fmean(ctoks), 1),
        "citations": any(cites),
        "timed_requests": len(latency),
    }
    if any(cites):
        # a cited passage holds the expected answer: retrieval did its part (recall@k)
        res["retrieval_recall"] = sum(found) / len(found)
    return {"metrics": res, "outputs": outputs, "correct": score["correct"], "citations": cites, "prompt_tokens": ptoks}


def _builders(retriever: Retriever, pool: list[dict], few_shot: int) -> dict[str, Callable]:
    def plain(row: dict) -> tuple[list[dict], list]:
        return prompt_messages(row["messages"]), []

    def shots(row: dict) -> tuple[list[dict], list]:
        return with_few_shot(prompt_messages(row["messages"]), pool, few_shot, expected_of(row)), []

    def rag(row: dict) -> tuple[list[dict], list[Passage]]:
        msgs = prompt_messages(row["messages"])
        passages = retriever.retrieve(question_of(row))
        return augment_messages(msgs, passages, retriever.template), passages

    return {"plain": plain, "few-shot": shots, "rag": rag}


def load_variants(run: RunDir) -> tuple[dict[str, tuple[Any, Callable]], Any]:
    """{"base": (model, context), "fine-tuned": (model, context)} and the run's tokenizer.

    An adapter run answers as the base model with its adapter switched off (one copy of
    the weights); a full fine-tune loads the base model separately."""
    from ..lm.load import load_model
    from ..model.load import load_trained

    model, tok, source = load_trained(run)
    if hasattr(model, "disable_adapter"):
        return {"base": (model, lambda: _base_context(model)), "fine-tuned": (model, lambda: _merged(model))}, tok
    import contextlib

    base = load_model(source.path, run.recipe().model.dtype, run.recipe().model.trust_remote_code).eval()
    return {"base": (base, contextlib.nullcontext), "fine-tuned": (model, contextlib.nullcontext)}, tok


# --------------------------------------------------------------------------- knowledge update


def load_update_file(path: Path) -> list[dict]:
    """`{"changes": [{"old": "$1,379", "new": "$1,299", "fact_id": "optional"}, ...]}`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UpdateFileError(f"{path}: cannot read the update file ({exc})") from None
    changes = data.get("changes") if isinstance(data, dict) else None
    if not isinstance(changes, list) or not changes:
        raise UpdateFileError(f'{path}: expected {{"changes": [{{"old": "...", "new": "..."}}]}}')
    for i, c in enumerate(changes):
        if not (
            isinstance(c, dict)
            and isinstance(c.get("old"), str)
            and isinstance(c.get("new"), str)
            and c["old"]
            and c["new"]
            and c["old"] != c["new"]
        ):
            raise UpdateFileError(f"{path}: changes[{i}] needs different non-empty strings 'old' and 'new'")
    return changes


def updated_index(index_path: Path, changes: list[dict], out: Path) -> tuple[Path, dict]:
    """Copy the index to out/index-updated, rewrite the facts in its documents (copies saved to
    out/docs-updated) and re-index incrementally. Returns (path, what changed)."""
    dst = out / "index-updated"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(index_path, dst)
    index = KnowledgeIndex.open(dst)
    texts: dict[str, tuple[str, str]] = {}
    hits = {c["old"]: 0 for c in changes}
    from ..rag.chunk import read_document

    for doc in index.documents():
        src = index.source_path(doc["doc"])
        if not src.is_file():
            raise FileNotFoundError(f"{src}: indexed document not found — the update rewrites a copy of it")
        kind, text = read_document(src)
        new = text
        for c in changes:
            hits[c["old"]] += new.count(c["old"])
            new = new.replace(c["old"], c["new"])
        if new != text:
            texts[doc["doc"]] = (kind, new)
            copy = out / "docs-updated" / Path(doc["doc"]).name
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_text(new, encoding="utf-8")
    missing = [old for old, n in hits.items() if not n]
    if missing:
        raise UpdateFileError(f"update: {', '.join(map(repr, missing))} not found in any indexed document")
    t0 = time.perf_counter()
    report = index.update(texts=texts, root=Path(index.info.get("root") or Path.cwd()))
    info = {"reindex_seconds": round(time.perf_counter() - t0, 2), **report.as_dict(), "replacements": hits}
    index.close()
    return dst, info


def affected_rows(rows: list[dict], changes: list[dict]) -> list[dict]:
    """Test rows whose expected answer holds a changed fact, with old and new expectations."""
    out = []
    for r in rows:
        exp = expected_of(r) or []
        for c in changes:
            if any(c["old"] in e for e in exp) and (not c.get("fact_id") or c["fact_id"] == r.get("fact_id")):
                new = [e.replace(c["old"], c["new"]) for e in exp]
                out.append({**r, "expected": new, "old_expected": exp})
                break
    return out


# --------------------------------------------------------------------------- entry point


def compare_approaches(
    run: RunDir,
    index_path: Path,
    out: Path,
    limit: Optional[int] = None,
    top_k: int = 3,
    score_threshold: float = 0.0,
    few_shot: int = 3,
    max_new_tokens: Optional[int] = None,
    update_file: Optional[Path] = None,
    template: Optional[str] = None,
    volatility: str = "unknown",
    citations_needed: bool = False,
    log: Callable[[str], None] = print,
    batch_size: int = 1,
    latency_requests: Optional[int] = None,
) -> dict:
    """Run all five approaches on the run's test split; write out/report.{md,json}, approaches.png."""
    from ..rag.report import write_compare_report

    run.require()
    if update_file is not None:
        changes = load_update_file(update_file)  # fail before any model is loaded
    test = [r for r in read_jsonl(run.split_file("test")) if expected_of(r)]
    if not test:
        raise UpdateFileError(f"{run.split_file('test')}: no test rows with an expected answer to grade")
    rows = spread_sample(test, limit) if limit else test
    cfg = run.recipe().evaluation
    max_new = max_new_tokens or cfg.max_new_tokens
    retriever = Retriever.open(index_path, top_k, score_threshold, template)
    pool = few_shot_pool(read_jsonl(run.split_file("train")))
    builders = _builders(retriever, pool, few_shot)
    variants, tok = load_variants(run)
    plan = {
        "base": ("base", "plain"),
        "base+few-shot": ("base", "few-shot"),
        "base+rag": ("base", "rag"),
        "fine-tuned": ("fine-tuned", "plain"),
        "fine-tuned+rag": ("fine-tuned", "rag"),
    }
    results: dict[str, dict] = {}
    t_all = time.time()
    for name, (variant, how) in plan.items():
        model, ctx = variants[variant]
        log(
            f"{name}: {len(rows)} questions"
            + (
                ", one request at a time"
                if batch_size <= 1
                else f" in batches of {batch_size}, {latency_requests or len(rows)} timed alone"
            )
        )
        with ctx():
            results[name] = run_approach(model, tok, rows, builders[how], max_new, batch_size, latency_requests)
        m = results[name]["metrics"]
        log(
            f"  fact accuracy {m['fact_accuracy']:.1%}, {m['latency_ms_mean']:.0f} ms/request, "
            f"{m['prompt_tokens_mean']:.0f} prompt tokens/request"
        )
    update = None
    if update_file is not None:
        update = knowledge_update(out, index_path, changes, test, variants, tok, retriever, max_new, log, batch_size)
    out.mkdir(parents=True, exist_ok=True)
    samples = [
        {
            "approach": name,
            "question": question_of(r),
            "expected": expected_of(r),
            "answer": res["outputs"][i],
            "correct": res["correct"][i],
            "prompt_tokens": res["prompt_tokens"][i],
            "citations": res["citations"][i],
        }
        for name, res in results.items()
        for i, r in enumerate(rows)
    ]
    atomic_write_jsonl(out / "samples.jsonl", samples)
    train_stage = run.manifest().get("stages", {}).get("train", {})
    import torch

    report = {
        "run": str(run.path),
        "index": str(index_path),
        "test_rows": len(rows),
        "test_rows_available": len(test),
        "approaches": {k: v["metrics"] for k, v in results.items()},
        "settings": {
            "top_k": top_k,
            "score_threshold": score_threshold,
            "few_shot": few_shot,
            "max_new_tokens": max_new,
            "template": retriever.template,
            "device": str(variants["base"][0].device),
            "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "requests": (
                "one at a time"
                if batch_size <= 1
                else f"in batches of {batch_size} (accuracy) and one at a time (latency)"
            )
            + ", greedy",
            "batch_size": batch_size,
        },
        "training": {"seconds": train_stage.get("seconds"), "steps": train_stage.get("steps")},
        "index_info": {k: retriever.index.info.get(k) for k in ("embedding_model", "documents", "chunks")},
        "update": update,
        "seconds": round(time.time() - t_all, 1),
    }
    retriever.index.close()
    return write_compare_report(out, report, volatility, citations_needed)


def knowledge_update(
    out: Path,
    index_path: Path,
    changes: list[dict],
    test: list[dict],
    variants: dict,
    tok: Any,
    retriever: Retriever,
    max_new: int,
    log: Callable,
    batch_size: int = 1,
) -> dict:
    """Ask the questions about changed facts again, against the updated index."""
    rows = affected_rows(test, changes)
    if not rows:
        raise UpdateFileError(
            "update: no test question asks about a changed fact — change a fact the test split "
            "covers (its `expected` strings)"
        )
    new_path, info = updated_index(index_path, changes, out)
    log(
        f"knowledge update: {info['chunks_embedded']} chunk(s) re-embedded, {info['chunks_reused']} reused "
        f"in {info['reindex_seconds']} s; asking {len(rows)} affected question(s) again"
    )
    new_retriever = Retriever.open(
        new_path, retriever.top_k, retriever.score_threshold, retriever.template, retriever.index.embed
    )
    builders = _builders(new_retriever, [], 0)
    res: dict[str, Any] = {
        "changes": changes,
        "index": str(new_path),
        **info,
        "questions": len(rows),
        "approaches": {},
        "samples": [],
    }
    for name, (variant, how) in {
        "base+rag": ("base", "rag"),
        "fine-tuned": ("fine-tuned", "plain"),
        "fine-tuned+rag": ("fine-tuned", "rag"),
    }.items():
        model, ctx = variants[variant]
        with ctx():
            r = run_approach(model, tok, rows, builders[how], max_new, batch_size, latency_requests=1)
        old = [contains_all(o, row["old_expected"]) for o, row in zip(r["outputs"], rows)]
        res["approaches"][name] = {
            "new_fact_accuracy": r["metrics"]["fact_accuracy"],
            "old_fact_rate": sum(old) / len(old),
            # the retrieved passages state the new value (None: no retrieval)
            "context_has_new_fact": r["metrics"].get("retrieval_recall"),
        }
        res["samples"] += [
            {
                "approach": name,
                "question": question_of(row),
                "new": row["expected"],
                "old": row["old_expected"],
                "answer": o,
                "citations": c,
            }
            for o, row, c in zip(r["outputs"], rows, r["citations"])
        ]
    new_retriever.index.close()
    return res
