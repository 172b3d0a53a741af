"""RAG in the server: a prompt transform applied to chat requests before generation.

    tuneforge serve runs/demo --rag demo=kb/ --rag smollm2-135m-instruct=kb/ --rag-top-k 3

Each served model (base or adapter) may have its own index; `--rag INDEX` (no name)
applies to every model, hot-loaded adapters included. A chat request to such a model has
its last user turn augmented with the top-k passages (template: `retrieve.DEFAULT_TEMPLATE`
or `--rag-template FILE`), and the response carries the passages used:

    "tuneforge_citations": [{"source": "examples/demo/handbook.md", "chunk": 4, "chunk_id": 5,
                             "heading": "...", "score": 0.61}, ...]

(top level of a chat.completion; first chunk of each choice when streaming). A request
sets its own `top_k`, `score_threshold` or turns retrieval off with the extension field
`"tuneforge_rag": {"top_k": 2, "score_threshold": 0.3, "enabled": true}` (OpenAI clients:
`extra_body=`). /v1/completions (raw text prompts) is never augmented.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Optional

from ...errors import TuneforgeError
from ...rag.retrieve import Retriever

ALL = "*"


class RagRouteError(TuneforgeError, ValueError):
    """A --rag option that cannot be served (bad top_k, a model given twice or not served)."""


MAX_TOP_K = 20  # a request cannot make the prompt arbitrarily long


def parse_spec(spec: str) -> tuple[str, str]:
    """`NAME=INDEX` or `INDEX` (every model).

    >>> parse_spec("demo=kb"), parse_spec("kb")
    (('demo', 'kb'), ('*', 'kb'))
    """
    name, sep, path = spec.partition("=")
    return (name.strip(), path.strip()) if sep else (ALL, spec.strip())


class RagRouter:
    """Which index (if any) serves each model name, and the server's default top_k / threshold."""

    def __init__(self, routes: dict[str, Retriever]):
        self.routes = routes

    @classmethod
    def from_specs(
        cls,
        specs: list[str],
        models: list[str],
        top_k: int = 3,
        score_threshold: float = 0.0,
        template: Optional[str] = None,
        embed: Any = None,
    ) -> RagRouter:
        """Open every index once (fails before any weights load); names must be served models."""
        if not 1 <= top_k <= MAX_TOP_K:
            raise RagRouteError(f"--rag-top-k must be between 1 and {MAX_TOP_K} (got {top_k})")
        pairs = [parse_spec(s) for s in specs]
        names = [n for n, _ in pairs]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise RagRouteError(f"--rag: {', '.join(sorted(dup))} given twice — one index per model")
        unknown = [n for n in names if n != ALL and n not in models]
        if unknown:
            raise RagRouteError(
                f"--rag {unknown[0]}=...: no served model is called {unknown[0]!r} "
                f"(serving: {', '.join(models)}); use NAME=INDEX with one of those names"
            )
        opened: dict[str, Retriever] = {}
        routes = {}
        for name, path in pairs:
            key = str(Path(path).resolve())
            if key not in opened:
                opened[key] = Retriever.open(path, top_k, score_threshold, template, embed)
            routes[name] = opened[key]
        return cls(routes)

    def for_model(self, name: str) -> Optional[Retriever]:
        return self.routes.get(name) or self.routes.get(ALL)

    def apply(self, model: str, messages: list[dict], options: Any = None) -> tuple[list[dict], Optional[list[dict]]]:
        """(messages to generate from, citations or None when the model has no index / RAG is off)."""
        from ...errors import APIError

        retriever = self.for_model(model)
        enabled = getattr(options, "enabled", None)
        if retriever is None:
            if options is not None and enabled is not False:
                raise APIError(
                    400,
                    f"tuneforge_rag: the model '{model}' has no knowledge index — start the server "
                    f"with --rag {model}=INDEX",
                    param="tuneforge_rag",
                    code="rag_not_configured",
                )
            return messages, None
        if enabled is False:
            return messages, None
        top_k = getattr(options, "top_k", None)
        if top_k is not None and top_k > MAX_TOP_K:
            raise APIError(400, f"tuneforge_rag.top_k: at most {MAX_TOP_K}", param="tuneforge_rag.top_k")
        out, passages = retriever.augment(messages, top_k, getattr(options, "score_threshold", None))
        return out, [p.citation() for p in passages]

    def close(self) -> None:
        for r in {id(r): r for r in self.routes.values()}.values():
            r.index.close()


async def rag_apply(
    router: Optional[RagRouter], model: str, messages: list[dict], options: Any = None
) -> tuple[list[dict], Optional[list[dict]]]:
    """The server's hook: `router.apply` off the event loop (embedding the question is a
    forward pass); without a router, a request asking for RAG gets a 400."""
    if router is None:
        return RagRouter({}).apply(model, messages, options)
    if router.for_model(model) is None and options is None:
        return messages, None
    return await asyncio.to_thread(router.apply, model, messages, options)
