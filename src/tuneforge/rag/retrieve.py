"""Retrieval and prompt augmentation: top-k passages, a template, citations.

    retriever = Retriever(KnowledgeIndex.open("idx"), top_k=3, score_threshold=0.2)
    messages, passages = retriever.augment(messages)     # last user turn now carries the context
    [p.citation() for p in passages]                      # source, chunk, chunk_id, heading, score

The template decides where passages go; by default they are put before the question in
the last user message, so a run's own system prompt (as in training) stays untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import TuneforgeError
from .index import KnowledgeIndex

DEFAULT_TEMPLATE = """Answer the question using the context below.

Context:
{context}

Question: {question}"""


class RagTemplateError(TuneforgeError, ValueError):
    pass


@dataclass(frozen=True)
class Passage:
    source: str  # document key (path relative to the index root)
    chunk: int  # ordinal of the chunk within its document
    chunk_id: int  # global id in the index (stable while the chunk's text is unchanged)
    heading: str
    text: str
    score: float  # cosine similarity to the question, in [-1, 1]

    def citation(self) -> dict:
        return {
            "source": self.source,
            "chunk": self.chunk,
            "chunk_id": self.chunk_id,
            "heading": self.heading,
            "score": round(self.score, 4),
        }


def check_template(template: str, where: str = "template") -> str:
    missing = [p for p in ("{context}", "{question}") if p not in template]
    if missing:
        raise RagTemplateError(
            f"{where}: the RAG template must contain {' and '.join(missing)} — e.g.\n{DEFAULT_TEMPLATE}"
        )
    return template


def _last(heading: str) -> str:
    return heading.rsplit(" > ", 1)[-1]


def render_prompt(question: str, passages: list[Passage], template: str = DEFAULT_TEMPLATE) -> str:
    """The user turn with passages numbered [1], [2], ... (placeholders replaced, no str.format:
    documents may contain braces).

    >>> p = Passage("a.md", 0, 1, "Returns", "43 days.", 0.8)
    >>> print(render_prompt("How long?", [p], "{context}|{question}"))
    [1] Returns: 43 days.|How long?
    """
    # only the innermost heading: the full path repeats the document title in every passage (tokens = cost)
    context = "\n".join(
        f"[{i}] {_last(p.heading) + ': ' if p.heading else ''}{p.text}" for i, p in enumerate(passages, 1)
    )
    return template.replace("{context}", context).replace("{question}", question)


def augment_messages(messages: list[dict], passages: list[Passage], template: str = DEFAULT_TEMPLATE) -> list[dict]:
    """A copy of `messages` whose last user turn carries the passages; unchanged when there are none."""
    if not passages:
        return list(messages)
    last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last is None:
        return list(messages)
    out = [dict(m) for m in messages]
    out[last]["content"] = render_prompt(messages[last]["content"], passages, template)
    return out


class Retriever:
    """Top-k passages from one index for a question, above a cosine score threshold."""

    def __init__(
        self, index: KnowledgeIndex, top_k: int = 3, score_threshold: float = 0.0, template: str = DEFAULT_TEMPLATE
    ):
        if top_k < 1:
            raise RagTemplateError(f"top_k must be at least 1 (got {top_k})")
        self.index, self.top_k, self.score_threshold = index, top_k, score_threshold
        self.template = check_template(template)

    @classmethod
    def open(
        cls,
        path: str | Path,
        top_k: int = 3,
        score_threshold: float = 0.0,
        template: Optional[str] = None,
        embed: Any = None,
    ) -> Retriever:
        return cls(KnowledgeIndex.open(path, embed), top_k, score_threshold, template or DEFAULT_TEMPLATE)

    def retrieve_many(
        self, questions: list[str], top_k: Optional[int] = None, score_threshold: Optional[float] = None
    ) -> list[list[Passage]]:
        k = self.top_k if top_k is None else top_k
        floor = self.score_threshold if score_threshold is None else score_threshold
        if not questions:
            return []
        hits = self.index.search(self.index.embed(list(questions)), k)
        rows = self.index.chunks(sorted({i for h in hits for i, _ in h}))
        return [
            [
                Passage(rows[i]["doc"], rows[i]["ordinal"], i, rows[i]["heading"], rows[i]["text"], s)
                for i, s in h
                if s >= floor and i in rows
            ]
            for h in hits
        ]

    def retrieve(
        self, question: str, top_k: Optional[int] = None, score_threshold: Optional[float] = None
    ) -> list[Passage]:
        return self.retrieve_many([question], top_k, score_threshold)[0]

    def augment(
        self, messages: list[dict], top_k: Optional[int] = None, score_threshold: Optional[float] = None
    ) -> tuple[list[dict], list[Passage]]:
        """(messages with context in the last user turn, the passages used)."""
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), None)
        if not question:
            return list(messages), []
        passages = self.retrieve(question, top_k, score_threshold)
        return augment_messages(messages, passages, self.template), passages
