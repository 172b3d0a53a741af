"""`tuneforge chat RUN`: talk to a trained run with exactly its training chat template."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..lm.generate import generate
from ..model.load import load_trained
from ..run import RunDir


class ChatSession:
    def __init__(
        self,
        run: RunDir,
        system: str | None = None,
        max_new_tokens: int = 128,
        retriever: Any = None,
        trust_remote_code: bool | None = None,
    ):
        """`trust_remote_code`: the opt-in of whoever runs `chat` to the model's custom code (the
        CLI's --trust-remote-code; None: TUNEFORGE_TRUST_REMOTE_CODE), never the run's recipe."""
        run.require()
        self.retriever = retriever  # tuneforge.rag.retrieve.Retriever: context for each question (--rag)
        self.citations: list[dict] = []  # the passages behind the last answer
        self.model, self.tokenizer, _ = load_trained(run, trust_remote_code=trust_remote_code)
        self.system = system or run.recipe().data.system_prompt
        self.max_new_tokens = max_new_tokens
        self.history: list[dict[str, Any]] = []

    def ask(self, text: str) -> str:
        msgs = ([{"role": "system", "content": self.system}] if self.system else []) + self.history
        msgs = msgs + [{"role": "user", "content": text}]
        if self.retriever is not None:  # context goes into this turn only; history keeps the plain question
            msgs, passages = self.retriever.augment(msgs)
            self.citations = [p.citation() for p in passages]
        reply = generate(self.model, self.tokenizer, [msgs], self.max_new_tokens, batch_size=1)[0]
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
        return reply

    def loop(self, read: Callable[[str], str] = input, write: Callable[[str], None] = print) -> None:
        write("Chat with the tuned model. /reset clears history, /exit (or Ctrl-D) quits.")
        while True:
            try:
                text = read("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                write("")
                return
            if text in ("/exit", "/quit"):
                return
            if text == "/reset":
                self.history.clear()
                continue
            if text:
                write(f"model> {self.ask(text)}")
                if self.retriever is not None:
                    write(format_citations(self.citations))


def format_citations(citations: list[dict]) -> str:
    """
    >>> format_citations([{"source": "a.md", "chunk": 3, "chunk_id": 9, "heading": "Returns", "score": 0.61}])
    'sources: [1] a.md #3 (Returns) score 0.61'
    """
    if not citations:
        return "sources: none above the score threshold"
    return "sources: " + "; ".join(
        f"[{i}] {c['source']} #{c['chunk']}"
        + (f" ({c['heading'].rsplit(' > ', 1)[-1]})" if c["heading"] else "")
        + f" score {c['score']:.2f}"
        for i, c in enumerate(citations, 1)
    )
