"""Documents → chunks: Markdown by headings, plain text by paragraphs, HTML via its headings.

A chunk is one section (or part of one) with the path of headings above it, so a
passage cited to a user says where it came from ("Products > Driftmop V4 robot vacuum").
Sections longer than `max_chars` are split at paragraph, then sentence, boundaries;
nothing is ever cut mid-sentence unless a single sentence is longer than `max_chars`.

    >>> [c.heading for c in chunk_markdown("# A\\ntext a\\n## B\\ntext b")]
    ['A', 'A > B']
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from ..errors import TuneforgeError

SUFFIXES = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
    ".rst": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


class UnsupportedDocument(TuneforgeError, ValueError):
    pass


@dataclass(frozen=True)
class Chunk:
    ordinal: int  # position within its document (0, 1, ...)
    heading: str  # "H1 > H2 > H3" above the text; "" when the document has none
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(f"{self.heading}\n{self.text}".encode()).hexdigest()

    def embed_text(self) -> str:
        """What is embedded: the heading path gives short passages their topic."""
        return f"{self.heading}\n{self.text}" if self.heading else self.text


def is_supported(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def _split_long(text: str, max_chars: int) -> list[str]:
    """Pack paragraphs (then sentences) into pieces of at most `max_chars` characters."""
    units: list[str] = []
    for para in (p.strip() for p in re.split(r"\n\s*\n", text)):
        if not para:
            continue
        if len(para) <= max_chars:
            units.append(para)
            continue
        for sent in _SENTENCE_END.split(para):
            # a single sentence longer than the limit is cut hard (rare: tables, code)
            units += [sent[i : i + max_chars] for i in range(0, len(sent), max_chars)]
    pieces: list[str] = []
    for u in units:
        if pieces and len(pieces[-1]) + 2 + len(u) <= max_chars:
            pieces[-1] = f"{pieces[-1]}\n\n{u}"
        else:
            pieces.append(u)
    return pieces


def chunk_markdown(text: str, max_chars: int = 1000) -> list[Chunk]:
    """One chunk per section (split further when long), headed by its heading path."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    stack: list[tuple[int, str]] = []
    fenced = False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        m = None if fenced else _HEADING.match(line)
        if m:
            level = len(m.group(1))
            stack = [(lv, t) for lv, t in stack if lv < level] + [(level, m.group(2).strip())]
            sections.append((" > ".join(t for _, t in stack), []))
        else:
            sections[-1][1].append(line)
    chunks: list[Chunk] = []
    for heading, lines in sections:
        for piece in _split_long("\n".join(lines), max_chars):
            chunks.append(Chunk(len(chunks), heading, piece))
    return chunks


def chunk_text(text: str, max_chars: int = 1000) -> list[Chunk]:
    """Plain text: paragraphs packed up to `max_chars`."""
    return [Chunk(i, "", p) for i, p in enumerate(_split_long(text, max_chars))]


class _HTMLToMarkdown(HTMLParser):
    """Headings become Markdown headings, block elements paragraphs; scripts and styles vanish."""

    BLOCK = {"p", "div", "li", "tr", "br", "section", "article", "pre", "blockquote", "table", "ul", "ol", "dd", "dt"}
    SKIP = {"script", "style", "noscript", "template", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self.skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.out.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag in self.BLOCK:
            self.out.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) or tag in self.BLOCK:
            self.out.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(re.sub(r"\s+", " ", data))


def html_to_markdown(html: str) -> str:
    """
    >>> html_to_markdown("<h2>Returns</h2><p>43 days.</p><script>x()</script>")
    '## Returns\\n\\n43 days.'
    """
    p = _HTMLToMarkdown()
    p.feed(html)
    p.close()
    lines = [ln.strip() for ln in "".join(p.out).splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _pdf_text(path: Path) -> str:
    try:
        from pypdf import PdfReader  # optional: only PDFs need it
    except ImportError:
        raise UnsupportedDocument(
            f"{path}: reading PDF needs the `pypdf` package — `pip install pypdf`, "
            f"or convert the file to text/Markdown first"
        ) from None
    return "\n\n".join(page.extract_text() or "" for page in PdfReader(str(path)).pages)


def read_document(path: Path) -> tuple[str, str]:
    """(kind, text) of a document file; kind is markdown | text | html | pdf."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UnsupportedDocument(
            f"{path}: unsupported document type {path.suffix!r} — use one of {', '.join(sorted(SUFFIXES))}"
        )
    if kind == "pdf":
        return kind, _pdf_text(path)
    return kind, path.read_text(encoding="utf-8", errors="replace")


def chunk_document(kind: str, text: str, max_chars: int = 1000) -> list[Chunk]:
    """Chunks of a document's text by its kind (PDF text is chunked as plain text)."""
    if kind == "markdown":
        return chunk_markdown(text, max_chars)
    if kind == "html":
        return chunk_markdown(html_to_markdown(text), max_chars)
    return chunk_text(text, max_chars)
