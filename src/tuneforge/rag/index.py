"""The knowledge index: chunks + embeddings in SQLite, vectors searched with FAISS.

    INDEX/
      index.json       format, embedding model + dimension, chunk size, counts, and the
                       generation that vectors.faiss was written at
      chunks.sqlite    documents(doc, kind, sha256, chunks, indexed_at)
                       chunks(id, doc, ordinal, heading, text, sha256, vector)   -- float32 blob
                       meta(key, value)                                          -- generation
      vectors.faiss    faiss IndexIDMap2(IndexFlatIP): id = chunks.id, inner product of
                       L2-normalised vectors = cosine similarity

SQLite is the source of truth; every update is one transaction that bumps `generation`.
vectors.faiss is written aside and renamed, then index.json records its generation; if
the two disagree on open (a crash in between), the FAISS index is rebuilt from the
stored vectors (no re-embedding). Updates are incremental: a document whose content
hash is unchanged is skipped; in a changed document, chunks whose own hash is unchanged
keep their id and vector, only new chunks are embedded, and vanished chunks are removed.
Documents are keyed by their path relative to `root` (the current directory by default).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import TuneforgeError
from ..io import atomic_write_json
from .chunk import chunk_document, is_supported, read_document

FORMAT = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (doc TEXT PRIMARY KEY, kind TEXT NOT NULL, sha256 TEXT NOT NULL,
                                      chunks INTEGER NOT NULL, indexed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, doc TEXT NOT NULL, ordinal INTEGER NOT NULL,
                                   heading TEXT NOT NULL, text TEXT NOT NULL, sha256 TEXT NOT NULL,
                                   vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks (doc);
"""


class KnowledgeIndexError(TuneforgeError, ValueError):
    """A problem with an index folder (missing, wrong model, wrong settings)."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def doc_key(path: Path, root: Path) -> str:
    """The document's key: its path relative to `root` (posix), or absolute when outside it.

    >>> doc_key(Path("/data/docs/a.md"), Path("/data"))
    'docs/a.md'
    """
    p, r = path.resolve(), root.resolve()
    try:
        return p.relative_to(r).as_posix()
    except ValueError:
        return p.as_posix()


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files given, plus supported documents found (recursively) in folders given."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and is_supported(f))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such document or folder")
    return out


@dataclass
class UpdateReport:
    added: list = field(default_factory=list)
    changed: list = field(default_factory=list)
    unchanged: list = field(default_factory=list)
    removed: list = field(default_factory=list)
    chunks_embedded: int = 0
    chunks_reused: int = 0
    chunks_removed: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def summary(self) -> str:
        return (
            f"{len(self.added)} added, {len(self.changed)} changed, {len(self.unchanged)} unchanged, "
            f"{len(self.removed)} removed document(s); chunks: {self.chunks_embedded} embedded, "
            f"{self.chunks_reused} reused, {self.chunks_removed} removed"
        )


class KnowledgeIndex:
    """An index folder opened for search and (incremental) updates."""

    def __init__(self, path: Path, embed: Callable[[list[str]], Any], info: dict, conn: sqlite3.Connection):
        self.path, self.embed, self.info, self.conn = path, embed, info, conn
        self._lock = threading.RLock()  # sqlite connection and faiss index are shared by server threads
        self.faiss_index = self._load_faiss()

    # open / create -----------------------------------------------------------------
    @classmethod
    def open(
        cls, path: str | Path, embed: Optional[Callable] = None, create: bool = False, max_chars: int = 1000
    ) -> KnowledgeIndex:
        """Open INDEX (or create it when `create`); `embed` defaults to the shared MiniLM embedder."""
        path = Path(path)
        info_file = path / "index.json"
        if embed is None:
            from ..lm.embed import load_embedder

            embed = load_embedder()
        model = getattr(embed, "name", "custom")
        if info_file.is_file():
            info = json.loads(info_file.read_text(encoding="utf-8"))
            if info.get("format") != FORMAT:
                raise KnowledgeIndexError(
                    f"{info_file}: index format {info.get('format')} — this tuneforge reads format "
                    f"{FORMAT}; rebuild it with `tuneforge rag index DOCS -o {path} --rebuild`"
                )
            if info.get("embedding_model") != model:
                raise KnowledgeIndexError(
                    f"{path}: built with embedding model {info.get('embedding_model')!r}, not {model!r}"
                    f" — rebuild it (`--rebuild`) or query it with the model it was built with"
                )
            if create and max_chars != info["max_chars"]:
                raise KnowledgeIndexError(
                    f"{path}: chunks are {info['max_chars']} characters at most; --max-chars "
                    f"{max_chars} needs a rebuild (--rebuild)"
                )
        elif create:
            path.mkdir(parents=True, exist_ok=True)
            dim = int(getattr(embed, "dim", 0) or embed(["dimension probe"]).shape[1])
            info = {
                "format": FORMAT,
                "embedding_model": model,
                "dim": dim,
                "max_chars": max_chars,
                "metric": "cosine (inner product of L2-normalised vectors)",
                "faiss_generation": -1,
                "documents": 0,
                "chunks": 0,
                "created_at": _now(),
                "updated_at": _now(),
            }
        else:
            raise FileNotFoundError(
                f"{path}: not a tuneforge knowledge index (no index.json) — build one with "
                f"`tuneforge rag index DOCS... -o {path}`"
            )
        conn = sqlite3.connect(str(path / "chunks.sqlite"), check_same_thread=False)
        conn.executescript(SCHEMA)
        return cls(path, embed, info, conn)

    @property
    def generation(self) -> int:
        row = self.conn.execute("SELECT value FROM meta WHERE key='generation'").fetchone()
        return int(row[0]) if row else 0

    def _load_faiss(self) -> Any:
        import faiss
        import numpy as np

        f = self.path / "vectors.faiss"
        if f.is_file() and self.info.get("faiss_generation") == self.generation:
            return faiss.read_index(str(f))
        # missing or stale (a crash between the SQLite commit and the FAISS write): rebuild from stored vectors
        index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.info["dim"]))
        rows = self.conn.execute("SELECT id, vector FROM chunks ORDER BY id").fetchall()
        if rows:
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            index.add_with_ids(np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows]), ids)
        return index

    # reading ------------------------------------------------------------------------
    def documents(self) -> list[dict]:
        cur = self.conn.execute("SELECT doc, kind, sha256, chunks, indexed_at FROM documents ORDER BY doc")
        return [dict(zip(("doc", "kind", "sha256", "chunks", "indexed_at"), r)) for r in cur]

    def __len__(self) -> int:
        return int(self.faiss_index.ntotal)

    def search(self, vectors: Any, k: int) -> list[list[tuple[int, float]]]:
        """Per query vector, up to k (chunk id, cosine score) pairs, best first."""
        import numpy as np

        with self._lock:
            if len(self) == 0:
                return [[] for _ in range(len(vectors))]
            scores, ids = self.faiss_index.search(np.asarray(vectors, dtype=np.float32), min(k, len(self)))
        return [[(int(i), float(s)) for i, s in zip(row_i, row_s) if i >= 0] for row_i, row_s in zip(ids, scores)]

    def chunks(self, ids: list[int]) -> dict[int, dict]:
        if not ids:
            return {}
        q = f"SELECT id, doc, ordinal, heading, text FROM chunks WHERE id IN ({','.join('?' * len(ids))})"
        with self._lock:
            rows = self.conn.execute(q, ids).fetchall()
        return {r[0]: dict(zip(("id", "doc", "ordinal", "heading", "text"), r)) for r in rows}

    # writing ------------------------------------------------------------------------
    def _upsert(self, doc: str, kind: str, text: str, report: UpdateReport) -> None:
        """Replace one document's chunks inside the current transaction (no commit)."""
        import numpy as np

        new = chunk_document(kind, text, self.info["max_chars"])
        old: dict[str, list[int]] = {}
        for cid, sha in self.conn.execute("SELECT id, sha256 FROM chunks WHERE doc=?", (doc,)):
            old.setdefault(sha, []).append(cid)
        fresh = []
        for c in new:
            pool = old.get(c.sha256)
            if pool:  # same heading + text as before: keep its id and vector
                self.conn.execute("UPDATE chunks SET ordinal=? WHERE id=?", (c.ordinal, pool.pop(0)))
                report.chunks_reused += 1
            else:
                fresh.append(c)
        gone = [cid for ids in old.values() for cid in ids]
        self._delete_chunks(gone)
        report.chunks_removed += len(gone)
        if fresh:
            vecs = np.asarray(self.embed([c.embed_text() for c in fresh]), dtype=np.float32)
            ids = []
            for c, v in zip(fresh, vecs):
                cur = self.conn.execute(
                    "INSERT INTO chunks (doc, ordinal, heading, text, sha256, vector) VALUES (?,?,?,?,?,?)",
                    (doc, c.ordinal, c.heading, c.text, c.sha256, v.tobytes()),
                )
                ids.append(cur.lastrowid)
            self.faiss_index.add_with_ids(vecs, np.array(ids, dtype=np.int64))
            report.chunks_embedded += len(fresh)
        sha = hashlib.sha256(text.encode()).hexdigest()
        self.conn.execute("INSERT OR REPLACE INTO documents VALUES (?,?,?,?,?)", (doc, kind, sha, len(new), _now()))

    def _delete_chunks(self, ids: list[int]) -> None:
        import numpy as np

        if ids:
            self.conn.executemany("DELETE FROM chunks WHERE id=?", [(i,) for i in ids])
            self.faiss_index.remove_ids(np.array(ids, dtype=np.int64))

    def update(
        self,
        files: Iterable[Path] = (),
        root: Path | None = None,
        remove: Iterable[str] = (),
        prune: bool = False,
        texts: Optional[dict[str, tuple[str, str]]] = None,
    ) -> UpdateReport:
        """Add or refresh `files` (keyed relative to `root`), drop the `remove`d keys (or paths),
        and with `prune` drop every indexed document not among `files`. `texts` maps extra
        keys to (kind, text) for documents that are not files. One transaction, then saved."""
        root = Path(root or Path.cwd())
        report = UpdateReport()
        docs: dict[str, tuple[str, str]] = {}
        for f in expand(files):
            try:
                docs[doc_key(f, root)] = read_document(f)
            except OSError as exc:
                raise FileNotFoundError(f"{f}: cannot read ({exc.strerror})") from None
        docs.update(texts or {})
        known = {d["doc"]: d["sha256"] for d in self.documents()}
        drop = set()
        for r in remove:
            key = r if r in known else doc_key(Path(r), root)
            if key not in known:
                raise FileNotFoundError(
                    f"--remove {r}: not in the index (documents: {', '.join(sorted(known)) or 'none'})"
                )
            drop.add(key)
        if prune:
            drop |= set(known) - set(docs)
        with self._lock:
            try:
                with self.conn:  # one transaction: all of it, or none
                    for key in sorted(drop):
                        ids = [r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE doc=?", (key,))]
                        self._delete_chunks(ids)
                        self.conn.execute("DELETE FROM documents WHERE doc=?", (key,))
                        report.removed.append(key)
                        report.chunks_removed += len(ids)
                    for key, (kind, text) in docs.items():
                        if known.get(key) == hashlib.sha256(text.encode()).hexdigest():
                            report.unchanged.append(key)
                            continue
                        (report.changed if key in known else report.added).append(key)
                        self._upsert(key, kind, text, report)
                    self.conn.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (str(self.generation + 1),)
                    )
            except BaseException:
                self.faiss_index = self._load_faiss()  # undo in-memory FAISS edits: SQLite rolled back
                raise
            self.info["root"] = str(root.resolve())  # where the keys of the last update point
            self._save()
        return report

    def source_path(self, doc: str) -> Path:
        """The file a document key names (keys are relative to the root of the last update)."""
        p = Path(doc)
        return p if p.is_absolute() else Path(self.info.get("root") or Path.cwd()) / p

    def _save(self) -> None:
        import faiss

        fd, tmp = tempfile.mkstemp(prefix=".vectors.", suffix=".tmp", dir=self.path)
        os.close(fd)
        try:
            faiss.write_index(self.faiss_index, tmp)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; readers (a server under another user) need the usual mode
            os.replace(tmp, self.path / "vectors.faiss")
        finally:
            Path(tmp).unlink(missing_ok=True)
        docs = self.conn.execute("SELECT COUNT(*), COALESCE(SUM(chunks), 0) FROM documents").fetchone()
        self.info.update(faiss_generation=self.generation, documents=docs[0], chunks=docs[1], updated_at=_now())
        atomic_write_json(self.path / "index.json", self.info)

    def close(self) -> None:
        self.conn.close()


def rebuild_path(path: Path) -> None:
    """Remove an index folder's files (for --rebuild); refuses folders that are not indexes."""
    if not path.exists():
        return
    if not (path / "index.json").is_file():
        raise KnowledgeIndexError(
            f"{path}: exists and is not a knowledge index — refusing to delete it; choose another -o"
        )
    for name in ("index.json", "chunks.sqlite", "chunks.sqlite-journal", "vectors.faiss"):
        (path / name).unlink(missing_ok=True)
