"""Report of `compare-approaches`: report.json, report.md, approaches.png and a recommendation.

The recommendation is computed from the measured numbers, in the terms teams decide by:
accuracy, knowledge volatility (does an answer change when the documents do?), latency
per request, cost (prompt tokens per request) and the need for citations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..io import atomic_write_json, atomic_write_text

RAG = ("base+rag", "fine-tuned+rag")
NEAR = 0.05  # approaches within 5 accuracy points of the best count as "as accurate"


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def recommend(
    approaches: dict[str, dict],
    update: Optional[dict],
    training_seconds: Optional[float],
    volatility: str = "unknown",
    citations_needed: bool = False,
) -> dict[str, Any]:
    """The approach to use and why, from the measured numbers.

    volatility: low (facts rarely change) | high (they change faster than you retrain) | unknown.
    """
    acc = {k: v["fact_accuracy"] for k, v in approaches.items()}
    best = max(acc, key=lambda k: (acc[k], -approaches[k]["prompt_tokens_mean"]))
    near = [k for k in acc if acc[k] >= acc[best] - NEAR]
    cheapest_near = min(near, key=lambda k: (approaches[k]["prompt_tokens_mean"], approaches[k]["latency_ms_mean"]))
    rag_best = max(RAG, key=lambda k: (acc[k], k == "base+rag"))  # a tie goes to the one needing no training
    plain = [k for k in approaches if k not in RAG]
    plain_best = max(plain, key=lambda k: acc[k])
    ft, hy = approaches["fine-tuned"], approaches[rag_best]

    points = [
        f"Accuracy: {best} is the most accurate ({_pct(acc[best])}); "
        + ", ".join(f"{k} {_pct(acc[k])}" for k in acc if k != best)
        + "."
    ]
    if update:
        u = update["approaches"]
        points.append(
            f"Knowledge volatility: after {len(update['changes'])} fact(s) changed in the documents, a "
            f"{update['reindex_seconds']} s incremental re-index ({update['chunks_embedded']} chunk(s) re-embedded, "
            f"{update['chunks_reused']} kept) made base+rag answer the new value in {_pct(u['base+rag']['new_fact_accuracy'])} "
            f"and fine-tuned+rag in {_pct(u['fine-tuned+rag']['new_fact_accuracy'])} of the {update['questions']} affected "
            f"question(s); the fine-tuned model alone still gave the old value in {_pct(u['fine-tuned']['old_fact_rate'])}"
            f" (new value: {_pct(u['fine-tuned']['new_fact_accuracy'])}) until it is retrained"
            + (f" (its training took {training_seconds:.0f} s)." if training_seconds else ".")
        )
        seen = u["base+rag"].get("context_has_new_fact")
        used = max(u["base+rag"]["new_fact_accuracy"], u["fine-tuned+rag"]["new_fact_accuracy"])
        if seen is not None and seen - used >= 0.5:
            points.append(
                f"Reading the context is the bottleneck here: the retrieved passages held the new value for "
                f"{_pct(seen)} of the affected questions, but the model repeated it in only {_pct(used)}"
                + (
                    f" (fine-tuned+rag still said the old value in {_pct(u['fine-tuned+rag']['old_fact_rate'])}: "
                    f"memorised facts override the context)"
                    if u["fine-tuned+rag"]["old_fact_rate"] > 0
                    else ""
                )
                + ". A larger base model, or fine-tuning on (context, question) → answer rows, makes RAG usable."
            )
    points.append(
        f"Latency: fine-tuned {ft['latency_ms_mean']:.0f} ms/request vs {rag_best} "
        f"{hy['latency_ms_mean']:.0f} ms/request (retrieval {hy['retrieval_ms_mean']:.0f} ms of it; the rest "
        f"is the longer prompt)."
    )
    points.append(
        "Cost: prompt tokens per request — "
        + ", ".join(f"{k} {v['prompt_tokens_mean']:.0f}" for k, v in approaches.items())
        + "; retrieved passages multiply the "
        f"prompt {hy['prompt_tokens_mean'] / max(ft['prompt_tokens_mean'], 1):.1f}× over the fine-tuned model's."
    )
    points.append("Citations: only the RAG approaches can name the source document and chunk behind an answer.")

    if citations_needed or volatility == "high":
        choice = rag_best
        why = "answers must cite their sources" if citations_needed else "the facts change faster than you retrain"
        reason = f"{choice}: {why}, and only retrieval does that; it reached {_pct(acc[choice])}."
    elif volatility == "low" and acc[plain_best] >= acc[best] - NEAR:
        choice = plain_best
        reason = (
            f"{choice}: the knowledge is stable, and it is within {int(NEAR * 100)} points of the best "
            f"({_pct(acc[choice])} vs {_pct(acc[best])}) with the shortest prompts and no retrieval step."
        )
    elif acc[best] == 0:
        choice = None
        reason = (
            "none yet: no approach answered a single test question correctly — train longer or on more data, "
            "or use a larger model, then compare again."
        )
    else:
        choice = cheapest_near
        reason = f"{choice}: the most accurate approach per prompt token ({_pct(acc[choice])})"
        gap = acc[best] - acc[choice]
        reason += "." if gap <= 0 else f"; {best} is only {100 * gap:.1f} points better at a higher cost."
    alternatives = []
    if choice is not None and choice not in RAG:
        took = (
            f"; after the update it gave the new value in {_pct(update['approaches'][rag_best]['new_fact_accuracy'])}"
            if update
            else ""
        )
        alternatives.append(
            f"If facts change between trainings or answers need citations: {rag_best} "
            f"({_pct(acc[rag_best])}, cites its sources, its index takes document edits in "
            f"seconds{took})."
        )
    if choice in RAG or choice != plain_best:
        alternatives.append(
            f"If knowledge is stable and latency/cost matter most: {plain_best} "
            f"({_pct(acc[plain_best])}, {approaches[plain_best]['prompt_tokens_mean']:.0f} prompt "
            f"tokens, {approaches[plain_best]['latency_ms_mean']:.0f} ms/request)."
        )
    if acc["fine-tuned+rag"] > max(acc["fine-tuned"], acc["base+rag"]):
        alternatives.append(
            "Hybrid (fine-tuned+rag) beats both parts: fine-tune for behaviour and stable knowledge, "
            "retrieve for volatile facts."
        )
    return {
        "choice": choice,
        "reason": reason,
        "points": points,
        "alternatives": alternatives,
        "volatility": volatility,
        "citations_needed": citations_needed,
    }


def plot(report: dict, path: Path) -> Optional[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ap = report["approaches"]
    names = list(ap)
    panels = [
        ("fact accuracy", [ap[k]["fact_accuracy"] * 100 for k in names], "%"),
        ("latency per request", [ap[k]["latency_ms_mean"] for k in names], "ms"),
        ("prompt tokens per request", [ap[k]["prompt_tokens_mean"] for k in names], "tokens"),
    ]
    upd = report.get("update")
    fig, axes = plt.subplots(1, len(panels) + bool(upd), figsize=(4.2 * (len(panels) + bool(upd)), 4))
    colors = ["#999999", "#bbbbbb", "#4c9be8", "#e8894c", "#8e5ce8"]
    for ax, (title, vals, unit) in zip(axes, panels):
        ax.bar(range(len(names)), vals, color=colors[: len(names)])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
        ax.set_ylabel(unit)
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    if upd:
        ax = axes[-1]
        u = upd["approaches"]
        keys = list(u)
        x = range(len(keys))
        ax.bar([i - 0.2 for i in x], [u[k]["new_fact_accuracy"] * 100 for k in keys], 0.4, label="new fact")
        ax.bar([i + 0.2 for i in x], [u[k]["old_fact_rate"] * 100 for k in keys], 0.4, label="old fact")
        ax.set_xticks(list(x), keys, rotation=30, ha="right", fontsize=8)
        ax.set_title("after a knowledge update")
        ax.set_ylabel("% of affected questions")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def render_markdown(r: dict) -> str:
    s, rec = r["settings"], r["recommendation"]
    lines = [
        "# Fine-tuning vs RAG vs both",
        "",
        f"Run `{r['run']}`, index `{r['index']}` ({r['index_info']['documents']} document(s), "
        f"{r['index_info']['chunks']} chunks, {r['index_info']['embedding_model']}); "
        f"{r['test_rows']} of {r['test_rows_available']} held-out test questions, asked {s['requests']} on "
        f"{s['device']} ({s['torch_threads']} threads); top_k {s['top_k']}, score threshold {s['score_threshold']}, "
        f"{s['few_shot']} few-shot examples, {s['max_new_tokens']} new tokens at most.",
        "",
        "| approach | fact accuracy | token F1 | latency ms/request (p50 / p95) | retrieval ms | prompt tokens/request "
        "| completion tokens | retrieval recall@k | citations |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k, m in r["approaches"].items():
        lines.append(
            f"| {k} | {_pct(m['fact_accuracy'])} | {m['token_f1']:.3f} | {m['latency_ms_mean']:.0f} "
            f"({m['latency_ms_p50']:.0f} / {m['latency_ms_p95']:.0f}) | {m['retrieval_ms_mean']:.1f} | "
            f"{m['prompt_tokens_mean']:.0f} | {m['completion_tokens_mean']:.0f} | "
            f"{_pct(m.get('retrieval_recall'))} | {'yes' if m['citations'] else 'no'} |"
        )
    if r.get("plots", {}).get("approaches"):
        lines += ["", f"![approaches]({r['plots']['approaches']})"]
    u = r.get("update")
    if u:
        lines += [
            "",
            "## Knowledge update",
            "",
            "Changed in a copy of the documents: "
            + "; ".join(f"`{c['old']}` → `{c['new']}`" for c in u["changes"])
            + f". Incremental re-index of `{u['index']}`: {len(u['changed'])} document(s) changed, "
            f"{u['chunks_embedded']} chunk(s) re-embedded, {u['chunks_reused']} reused, {u['chunks_removed']} "
            f"removed, in {u['reindex_seconds']} s. {u['questions']} test question(s) ask about a changed fact.",
            "",
            "| approach | retrieved passages state the new fact | answers with the new fact "
            "| still answers the old fact |",
            "|---|---|---|---|",
        ]
        for k, m in u["approaches"].items():
            lines.append(
                f"| {k} | {_pct(m.get('context_has_new_fact'))} | {_pct(m['new_fact_accuracy'])} "
                f"| {_pct(m['old_fact_rate'])} |"
            )
        lines += ["", "| approach | question | answer |", "|---|---|---|"]
        for smp in u["samples"][:12]:
            lines.append(f"| {smp['approach']} | {smp['question']} | {smp['answer'].replace('|', '/')[:160]} |")
    lines += ["", "## Recommendation", "", f"**{rec['reason']}**", ""]
    lines += [f"- {p}" for p in rec["points"]]
    if rec["alternatives"]:
        lines += ["", "When to choose otherwise:", ""] + [f"- {a}" for a in rec["alternatives"]]
    lines += [
        "",
        f"(volatility assumed: {rec['volatility']}; citations required: {rec['citations_needed']}. "
        "Every answer, its prompt tokens, latency and citations: samples.jsonl.)",
        "",
    ]
    return "\n".join(lines)


def write_compare_report(out: Path, report: dict, volatility: str = "unknown", citations_needed: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    report["recommendation"] = recommend(
        report["approaches"],
        report.get("update"),
        report.get("training", {}).get("seconds"),
        volatility,
        citations_needed,
    )
    png = plot(report, out / "approaches.png")
    report["plots"] = {"approaches": png and png.name}
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    return report
