"""`tuneforge rag ...` and `tuneforge compare-approaches`: knowledge index, retrieval, fine-tune vs RAG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from . import common

rag_app = typer.Typer(no_args_is_help=True, help="Knowledge index for retrieval-augmented generation (RAG).")


_call = common.guard  # the RAG errors are TuneforgeErrors: the one error path


def read_template(path: Optional[Path]) -> Optional[str]:
    if path is None:
        return None
    from ..rag.retrieve import check_template

    if not path.is_file():
        raise FileNotFoundError(f"--template {path}: no such file")
    return check_template(path.read_text(encoding="utf-8"), str(path))


@rag_app.command("index")
def index_cmd(
    docs: Optional[list[Path]] = typer.Argument(
        None, help="Documents or folders (.md .txt .html .htm; .pdf with pypdf)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Index folder (created, or updated in place)."),
    remove: Optional[list[str]] = typer.Option(
        None, "--remove", help="Drop this document from the index (repeatable)."
    ),
    prune: bool = typer.Option(False, "--prune", help="Also drop indexed documents not given now."),
    root: Optional[Path] = typer.Option(
        None, help="Documents are keyed by their path relative to ROOT (default: current directory)."
    ),
    max_chars: int = typer.Option(1000, help="Longest chunk in characters (fixed when the index is created)."),
    rebuild: bool = typer.Option(False, "--rebuild", help="Start the index from scratch."),
):
    """Chunk, embed (all-MiniLM-L6-v2, offline) and store documents; re-runs update incrementally."""
    from ..rag.index import KnowledgeIndex, rebuild_path

    if not docs and not remove:
        common.fail(ValueError("give documents to index and/or --remove DOC"))
    if rebuild:
        _call(rebuild_path, out)
    index = _call(KnowledgeIndex.open, out, None, True, max_chars)
    report = _call(index.update, docs or [], root, remove or [], prune)
    common.console.print(
        f"{out}: {report.summary()} — {index.info['documents']} document(s), {index.info['chunks']} chunks",
        highlight=False,
    )
    index.close()


@rag_app.command("query")
def query_cmd(
    index: Path = typer.Argument(..., help="Index folder."),
    question: str = typer.Argument(..., help="The question."),
    top_k: int = typer.Option(3, "--top-k", "-k", help="Passages to return."),
    score_threshold: float = typer.Option(0.0, help="Drop passages with a lower cosine score."),
    as_json: bool = typer.Option(False, "--json", help="Print passages and citations as JSON."),
    prompt: bool = typer.Option(False, "--prompt", help="Also print the augmented user turn."),
    template: Optional[Path] = typer.Option(None, help="Prompt template file with {context} and {question}."),
):
    """The top-k passages for a question, with their citations (source, chunk, score)."""
    from ..rag.retrieve import Retriever, render_prompt

    r = _call(Retriever.open, index, top_k, score_threshold, _call(read_template, template))
    passages = r.retrieve(question)
    if as_json:
        print(json.dumps([{**p.citation(), "text": p.text} for p in passages], ensure_ascii=False, indent=2))
    else:
        for i, p in enumerate(passages, 1):
            common.console.print(
                f"[bold][{i}][/] {p.source} #{p.chunk} (id {p.chunk_id}) score {p.score:.3f} — {p.heading}"
            )
            common.console.print(f"    {p.text[:300]}", markup=False, highlight=False)
        if not passages:
            common.console.print("no passage above the score threshold")
    if prompt:
        print(render_prompt(question, passages, r.template))


def compare_approaches_cmd(
    recipe: Path = typer.Argument(..., help="Recipe YAML of a trained run (or a run directory)."),
    index: Path = typer.Option(..., "--index", help="Knowledge index (tuneforge rag index)."),
    run_dir: Optional[Path] = typer.Option(
        None, "--run", help="Trained run to use (default: the recipe's run directory)."
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Report folder (default: RUN/compare-approaches)."),
    limit: Optional[int] = typer.Option(None, help="At most this many test questions (spread over the split)."),
    top_k: int = typer.Option(3, "--top-k", help="Passages per question for the RAG approaches."),
    score_threshold: float = typer.Option(0.0, help="Drop passages with a lower cosine score."),
    few_shot: int = typer.Option(3, help="Examples from the training split for the few-shot approach."),
    max_new_tokens: Optional[int] = typer.Option(
        None, help="Answer length (default: the recipe's evaluation.max_new_tokens)."
    ),
    update: Optional[Path] = typer.Option(
        None, "--update", help='Knowledge update to test: JSON {"changes": [{"old": "...", "new": "..."}]}.'
    ),
    volatility: str = typer.Option(
        "unknown", help="How often the facts change: low | high | unknown (shapes the recommendation)."
    ),
    citations: bool = typer.Option(False, "--citations/--no-citations", help="Answers must cite their sources."),
    template: Optional[Path] = typer.Option(None, help="RAG prompt template file with {context} and {question}."),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch."),
    batch_size: int = typer.Option(
        1,
        help="1: every question is a timed request; N: answer in batches of N "
        "(faster) and time --latency-requests questions alone.",
    ),
    latency_requests: int = typer.Option(16, help="Questions timed one at a time when --batch-size > 1."),
):
    """Base prompt-only, few-shot, RAG, fine-tuned and fine-tuned + RAG on the test split: accuracy,
    latency and prompt tokens per request, a knowledge-update check and a recommendation."""
    from ..evaluate.approaches import compare_approaches
    from ..lm.load import set_threads

    if volatility not in ("low", "high", "unknown"):
        common.fail(ValueError(f"--volatility {volatility!r}: use low, high or unknown"))
    if run_dir is None:
        if recipe.is_dir():
            run_dir = recipe
        else:
            from ..recipe import load_recipe

            run_dir = _call(load_recipe, recipe, []).run_path()
    run = common.run_dir(run_dir)
    set_threads(threads)
    report = _call(
        compare_approaches,
        run,
        index,
        out or run.path / "compare-approaches",
        limit,
        top_k,
        score_threshold,
        few_shot,
        max_new_tokens,
        update,
        _call(read_template, template),
        volatility,
        citations,
        lambda m: common.console.print(m, highlight=False),
        batch_size=batch_size,
        latency_requests=latency_requests,
    )
    folder = out or run.path / "compare-approaches"
    common.console.print((folder / "report.md").read_text(), markup=False, highlight=False)
    common.console.print(
        f"report: {folder}/report.md (+ report.json, approaches.png, samples.jsonl) — "
        f"recommended: {report['recommendation']['choice']}",
        highlight=False,
    )
