"""`tuneforge data augment`: synthetic training rows from a teacher model.

Two modes:
- paraphrase: the teacher rewrites each row's first user question (in a few styles, so
  even a greedy local teacher gives `n` different rewrites); the answer is kept.
- qa: the teacher turns raw documents (markdown/text: manuals, glossaries) into
  question/answer pairs, chunk by chunk, in a `Q: … / A: …` layout that is parsed back.

The teacher is any model tuneforge can load (built-in name, HF folder, .gguf, cached hub
id) or an OpenAI-compatible endpoint (base URL + key). Teachers make mistakes, so every
generated row is validated like user data (`normalise`/`check_messages`), checked for
empty, unchanged or runaway text, deduplicated against the existing data and the other
generated rows (`dedup_rows`), and tagged with where it came from:

    {"messages": [...], "provenance": {"generator": "...", "mode": "paraphrase", "source_line": 12}}

Everything dropped is counted by reason, so a weak teacher shows up in the report rather
than in the training data.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TuneforgeError
from .dedup import dedup_rows, normalise_text
from .formats import normalise
from .problems import RowError

# several phrasings, so n rewrites of one question differ even when decoding is greedy
PARAPHRASE_STYLES = (
    "in different words",
    "the way a customer might type it, casually",
    "more briefly",
    "more formally and completely",
    "as a question starting with a different word",
)
PARAPHRASE_SYSTEM = (
    "You rewrite questions. Keep the meaning and every detail needed to answer them. "
    "Reply with the rewritten question only: no preamble, no answer, no quotes."
)
QA_SYSTEM = (
    "You write training data from documents. Only ask what the text answers, and answer from the "
    "text alone. Use exactly this layout for every pair:\nQ: <question>\nA: <answer>"
)
_PREAMBLE = re.compile(
    r"^\s*(?:\*\*)?(?:rewritten question|paraphrased question|paraphrase|rewrite|question)"
    r"\s*(?:\*\*)?\s*[:\-]\s*",
    re.I,
)
_QA_LABEL = re.compile(
    r"^\s*(?:[-*]\s*)?(?:\*\*)?(q|a|question|answer)\s*\d*\s*(?:\*\*)?\s*[:.)]\s*(?:\*\*)?\s*(.*)$", re.I
)


class AugmentError(TuneforgeError, ValueError):
    """Augmentation cannot run (bad arguments, unreachable teacher); nothing was written."""


@dataclass
class Teacher:
    name: str  # recorded as provenance.generator
    complete: Callable[[list[list[dict]], int], list[str]]  # (conversations, max_new_tokens) -> replies


def local_teacher(model_ref: str, cache_dir: str | None = None, batch_size: int = 8) -> Teacher:
    """A teacher tuneforge loads itself, decoding greedily with its chat template."""
    from ..lm.generate import generate
    from ..lm.load import load_model, load_tokenizer
    from ..model.sources import resolve

    source = resolve(model_ref, cache_dir)
    tok, model = load_tokenizer(source.path), load_model(source.path)

    def complete(conversations: list[list[dict]], max_new_tokens: int) -> list[str]:
        return generate(model, tok, conversations, max_new_tokens, batch_size)

    return Teacher(f"local:{model_ref}", complete)


def chat_completions_url(base_url: str) -> str:
    """The /chat/completions URL of an OpenAI-compatible base URL (with or without /v1).

    >>> chat_completions_url("http://h:8000/v1/"), chat_completions_url("http://h:8000")
    ('http://h:8000/v1/chat/completions', 'http://h:8000/v1/chat/completions')
    """
    base = base_url.rstrip("/")
    return base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")


def endpoint_teacher(
    base_url: str,
    api_key: str | None = None,
    model: str = "teacher",
    temperature: float = 0.7,
    timeout: float = 120.0,
    transport: Any = None,
) -> Teacher:
    """A teacher behind an OpenAI-compatible /chat/completions endpoint (`transport`: for tests)."""
    import httpx

    url = chat_completions_url(base_url)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    client = httpx.Client(timeout=timeout, headers=headers, transport=transport)

    def ask(messages: list[dict], max_new_tokens: int) -> str:
        body = {"model": model, "messages": messages, "temperature": temperature, "max_tokens": max_new_tokens}
        try:
            resp = client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise AugmentError(
                f"{url}: cannot reach the teacher ({type(exc).__name__}: {exc}) — check --endpoint "
                f"(the base URL, e.g. http://host:8000/v1) and that the server is running"
            ) from None
        if resp.status_code in (401, 403):
            raise AugmentError(
                f"{url}: HTTP {resp.status_code} — the endpoint refused the key; pass --api-key (or set OPENAI_API_KEY)"
            )
        if resp.status_code >= 400:
            raise AugmentError(f"{url}: HTTP {resp.status_code}: {resp.text[:200]} — check --endpoint and --model")
        try:
            return resp.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            return ""  # a malformed reply is an invalid generation: counted, not fatal

    def complete(conversations: list[list[dict]], max_new_tokens: int) -> list[str]:
        return [ask(c, max_new_tokens) for c in conversations]

    return Teacher(f"endpoint:{model}@{base_url}", complete)


# --------------------------------------------------------------------------- paraphrase


def first_user(row: dict) -> int | None:
    return next((i for i, m in enumerate(row["messages"]) if m["role"] == "user"), None)


def clean_paraphrase(text: str, source: str) -> str:
    """The rewritten question without preamble or quotes; one line when the source was one line.

    >>> clean_paraphrase('Rewritten question: "How do I reset it?"\\nHope this helps!', "How to reset?")
    'How do I reset it?'
    """
    text = _PREAMBLE.sub("", text.strip())
    if "\n" not in source.strip():
        text = next((line for line in text.splitlines() if line.strip()), "")
    return text.strip().strip("\"'“”‘’`").strip()


def paraphrase_candidates(
    rows: list[dict], teacher: Teacher, n: int = 1, max_new_tokens: int = 96
) -> tuple[list[dict], Counter, int]:
    """`n` rewrites of each row's first user question (rows without one are skipped); the
    candidate rows, drops by reason, and the number of teacher requests."""
    jobs, convs = [], []
    for row in rows:
        i = first_user(row)
        if i is None:
            continue
        q = row["messages"][i]["content"]
        for k in range(n):
            style = PARAPHRASE_STYLES[k % len(PARAPHRASE_STYLES)]
            jobs.append((row, i, style))
            convs.append(
                [
                    {"role": "system", "content": PARAPHRASE_SYSTEM},
                    {"role": "user", "content": f"Rewrite this question {style}:\n\n{q}"},
                ]
            )
    replies = teacher.complete(convs, max_new_tokens) if convs else []
    out, dropped = [], Counter()
    for (row, i, style), reply in zip(jobs, replies):
        source = row["messages"][i]["content"]
        text = clean_paraphrase(reply, source)
        if not text:
            dropped["empty"] += 1
        elif normalise_text(text) == normalise_text(source):
            dropped["unchanged"] += 1
        elif len(text) > 3 * len(source) + 200:
            dropped["runaway"] += 1  # a rambling reply, not a rewrite
        else:
            msgs = [dict(m) for m in row["messages"]]
            msgs[i]["content"] = text
            extra = {k: v for k, v in row.items() if k not in ("messages", "_line", "provenance")}
            out.append(
                {
                    "messages": msgs,
                    **extra,
                    "provenance": {
                        "generator": teacher.name,
                        "mode": "paraphrase",
                        "source_line": row.get("_line"),
                        "style": style,
                    },
                }
            )
    return out, dropped, len(convs)


# --------------------------------------------------------------------------- documents -> Q&A


def read_docs(paths: Iterable[str | Path]) -> list[tuple[str, str]]:
    """(path, text) of each document; every unreadable file is named at once."""
    docs, bad = [], []
    for p in map(Path, paths):
        if not p.is_file():
            bad.append(f"{p}: not found")
            continue
        try:
            docs.append((str(p), p.read_text(encoding="utf-8-sig")))
        except UnicodeDecodeError as exc:
            bad.append(f"{p}: not UTF-8 text (byte {exc.start}) — convert it to UTF-8 markdown or text")
    if bad:
        raise AugmentError("--docs: " + "; ".join(bad))
    return docs


def chunk_text(text: str, max_chars: int = 2000) -> list[str]:
    """Paragraphs packed into chunks of at most `max_chars`; a markdown heading starts a new chunk,
    so a chunk stays about one topic. A paragraph longer than `max_chars` is cut at sentence ends.

    >>> chunk_text("# A\\none\\n\\ntwo\\n\\n# B\\nthree", 100)
    ['# A\\none\\n\\ntwo', '# B\\nthree']
    >>> chunk_text("## Products\\n### Mop\\nIt mops.", 100)
    ['## Products\\n\\n### Mop\\nIt mops.']
    """
    paras = [p.strip() for p in re.split(r"\n\s*\n|\n(?=#{1,6}\s)", text) if p.strip()]
    pieces = []
    for p in paras:
        while len(p) > max_chars:
            cut = p.rfind(". ", 0, max_chars)
            cut = cut + 1 if cut > max_chars // 2 else max_chars
            pieces.append(p[:cut].strip())
            p = p[cut:].strip()
        pieces.append(p)
    chunks: list[str] = []
    for p in pieces:
        # a chunk that is only headings ("## Products" right before "### Driftmop") has nothing to ask about
        heading_only = bool(chunks) and all(line.startswith("#") for line in chunks[-1].splitlines())
        if chunks and (heading_only or not p.startswith("#")) and len(chunks[-1]) + 2 + len(p) <= max_chars:
            chunks[-1] += "\n\n" + p
        else:
            chunks.append(p)
    return chunks


def parse_qa(text: str) -> list[tuple[str, str]]:
    """Question/answer pairs from a `Q: … A: …` reply (also `Question 1:`, `**A:**`, `- Q.`).

    >>> parse_qa("Q: What is X?\\nA: A robot.\\nIt cleans.\\n\\nQ: Price?\\nA: $5")
    [('What is X?', 'A robot.\\nIt cleans.'), ('Price?', '$5')]
    """
    pairs: list[tuple[str, str]] = []
    q: str | None = None
    a: str | None = None
    for line in text.splitlines():
        m = _QA_LABEL.match(line)
        kind = m.group(1).lower()[0] if m else None
        if kind == "q":
            if q and a:
                pairs.append((q.strip(), a.strip()))
            q, a = m.group(2), None
        elif kind == "a" and q is not None and a is None:
            a = m.group(2)
        elif a is not None:
            a += "\n" + line
        elif q is not None:
            q += "\n" + line
    if q and a:
        pairs.append((q.strip(), a.strip()))
    return [(x, y) for x, y in pairs if x and y]


def qa_candidates(
    docs: list[tuple[str, str]],
    teacher: Teacher,
    n: int = 3,
    max_chars: int = 2000,
    max_new_tokens: int = 384,
    limit: int | None = None,
) -> tuple[list[dict], Counter, int]:
    """About `n` Q&A pairs per chunk of each document (at most `limit` chunks in all)."""
    jobs, convs = [], []
    for path, text in docs:
        for c, chunk in enumerate(chunk_text(text, max_chars)):
            if limit is not None and len(jobs) >= limit:
                break
            jobs.append((path, c))
            convs.append(
                [
                    {"role": "system", "content": QA_SYSTEM},
                    {"role": "user", "content": f"Write {n} question-answer pairs about this text.\n\n{chunk}"},
                ]
            )
    replies = teacher.complete(convs, max_new_tokens) if convs else []
    out, dropped = [], Counter()
    for (path, c), reply in zip(jobs, replies):
        pairs = parse_qa(reply)
        if not pairs:
            dropped["no_qa_pairs"] += 1  # one reply, nothing usable in it
        for q, a in pairs[: max(n, 1) * 2]:  # a runaway reply does not flood the data with one chunk
            out.append(
                {
                    "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                    "provenance": {"generator": teacher.name, "mode": "qa", "source_doc": path, "chunk": c},
                }
            )
    return out, dropped, len(convs)


# --------------------------------------------------------------------------- validate, dedup, write


def validate_generated(rows: list[dict], dropped: Counter) -> list[dict]:
    """Generated rows that pass the same checks as user data (counted by problem code otherwise)."""
    ok = []
    for r in rows:
        try:
            ok.append(normalise(r, "messages"))
        except RowError as exc:
            dropped[exc.code] += 1
    return ok


def keep_new(existing: list[dict], new: list[dict], dedup: str, threshold: float, dropped: Counter) -> list[dict]:
    """New rows that neither (near-)copy an existing row nor an earlier new row.

    Existing rows go first, so `dedup_rows` (which keeps the first of a pair) never drops
    one of them in favour of a generated copy.
    """
    if dedup == "off":
        return new
    kept, _ = dedup_rows(existing + new, dedup, threshold)
    alive = {id(r) for r in kept}
    out = [r for r in new if id(r) in alive]
    if len(out) < len(new):
        dropped["duplicate"] += len(new) - len(out)
    return out


def augment_rows(
    existing: list[dict],
    teacher: Teacher,
    mode: str,
    docs: list[tuple[str, str]] = (),
    n: int = 1,
    dedup: str = "near",
    threshold: float = 0.8,
    limit: int | None = None,
    max_new_tokens: int | None = None,
) -> tuple[list[dict], dict]:
    """Generated, validated, deduplicated rows with provenance, and the report.

    paraphrase: rewrites of the first `limit` existing rows; qa: pairs from the first `limit`
    document chunks. Either way new rows are deduplicated against all existing rows.
    `max_new_tokens` defaults to 96 per paraphrase and 384 per chunk's Q&A pairs.
    """
    budget = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    if n < 1:
        raise AugmentError(f"--n {n}: must be at least 1")
    if mode == "paraphrase":
        cands, dropped, asked = paraphrase_candidates(existing[:limit] if limit else existing, teacher, n, **budget)
    elif mode == "qa":
        if not docs:
            raise AugmentError("--mode qa needs documents: pass --docs FILE (markdown or text; repeatable)")
        cands, dropped, asked = qa_candidates(docs, teacher, n, limit=limit, **budget)
    else:
        raise AugmentError(f"--mode {mode!r}: use paraphrase or qa")
    generated = len(cands) + sum(dropped.values())
    new = keep_new(existing, validate_generated(cands, dropped), dedup, threshold, dropped)
    report = {
        "mode": mode,
        "generator": teacher.name,
        "requests": asked,
        "generated": generated,
        "kept": len(new),
        "dropped": dict(sorted(dropped.items())),
    }
    return new, report


def augment_file(
    src: str | Path,
    dst: str | Path,
    teacher: Teacher,
    mode: str = "paraphrase",
    docs: Iterable[str | Path] = (),
    n: int = 1,
    limit: int | None = None,
    only_new: bool = False,
    fmt: str = "auto",
    fields: dict[str, str] | None = None,
    dedup: str = "near",
    threshold: float = 0.8,
    max_new_tokens: int | None = None,
) -> dict:
    """Augment the data in `src`; write `dst` (JSONL messages): its valid rows, then the new ones
    (only the new ones with `only_new`). `src` may be an empty file when only documents are used."""
    from ..io import atomic_write_jsonl
    from .validate import load_validated

    src, dst = Path(src), Path(dst)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise AugmentError(f"{dst}: refusing to overwrite the input — write to another file, check it, then replace")
    doc_texts = read_docs(docs) if docs else []
    data = load_validated(src, fmt, require_assistant=True, fields=fields)
    new, report = augment_rows(data.rows, teacher, mode, doc_texts, n, dedup, threshold, limit, max_new_tokens)
    keep = [] if only_new else [{k: v for k, v in r.items() if k != "_line"} for r in data.rows]
    atomic_write_jsonl(dst, keep + new)
    report.update(
        {
            "input": str(src),
            "output": str(dst),
            "input_rows": len(data.rows),
            "input_invalid": len({p.line for p in data.problems}),
            "written": len(keep) + len(new),
        }
    )
    return report


def render_report(r: dict) -> str:
    dropped = ", ".join(f"{k} {v}" for k, v in r["dropped"].items()) or "none"
    lines = [
        f"teacher:   {r['generator']} ({r['mode']}, {r['requests']} request(s))",
        f"generated: {r['generated']} row(s); kept {r['kept']}; dropped: {dropped}",
        f"written:   {r['written']} row(s) → {r['output']}"
        + (f" ({r['input_rows']} existing + {r['kept']} new)" if r["written"] != r["kept"] else " (new rows only)"),
    ]
    if r.get("input_invalid"):
        lines.append(
            f"note:      {r['input_invalid']} invalid row(s) in {r['input']} left out — "
            f"`tuneforge data inspect {r['input']}` lists them"
        )
    return "\n".join(lines)
