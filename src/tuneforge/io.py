"""Crash-safe file helpers: every file is written aside, fsynced, then renamed into place.

A folder (an adapter, an export, a checkpoint) is written into a staging folder beside its
final place; `replace_dir` fsyncs every file and folder in it and swaps it in. On Linux the
swap is one `renameat2(RENAME_EXCHANGE)`: at every instant the final path holds either the
complete old version or the complete new one, never nothing. Elsewhere it is two renames, and
`recover_dir` puts the old version back if a crash fell between them.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import TuneforgeError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` so a reader never sees a half-written file.

    >>> atomic_write_text("/tmp/x.txt", "hi").read_text()
    'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
        fsync_dir(path.parent)  # the rename itself must survive a power cut
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    return atomic_write_text(path, text)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file this project wrote itself (trusted; user files go through data.load)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (names created, renamed or removed in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file and folder under `root` (a staging folder before it is swapped in)."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(folder)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system cannot."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # kernel or file system without it
        return False
    raise OSError(err, os.strerror(err), str(b))


def _old(final_dir: Path) -> Path:
    return final_dir.with_name(f".{final_dir.name}.old")


def replace_dir(tmp_dir: Path, final_dir: Path) -> Path:
    """Move a fully written folder into place, replacing any previous version, crash-safely.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for text in ("v1", "v2"):
    ...     tmp = staging_dir(root / "adapter")
    ...     _ = (tmp / "w.txt").write_text(text)
    ...     _ = replace_dir(tmp, root / "adapter")
    >>> (root / "adapter" / "w.txt").read_text(), sorted(p.name for p in root.iterdir())
    ('v2', ['adapter'])
    """
    final_dir = Path(final_dir)
    fsync_tree(tmp_dir)
    recover_dir(final_dir)
    if final_dir.exists():
        if _exchange(Path(tmp_dir), final_dir):
            fsync_dir(final_dir.parent)
            shutil.rmtree(tmp_dir, ignore_errors=True)  # holds the old version now
            return final_dir
        old = _old(final_dir)
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)  # a crash before this line: recover_dir restores `old`
        fsync_dir(final_dir.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)
        fsync_dir(final_dir.parent)
    return final_dir


def recover_dir(final_dir: str | os.PathLike) -> None:
    """After a crash between the two renames of the fallback swap: put the old version back."""
    final_dir = Path(final_dir)
    old = _old(final_dir)
    if old.is_dir():
        if final_dir.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, final_dir)


class DiskFullError(TuneforgeError, OSError):
    """A write ran out of space; what was written before (the previous version) is untouched."""


# how the libraries report a full disk: OSError(ENOSPC) from Python, RuntimeError("iostream
# error" / "unexpected pos") from torch.save's zip writer, Exception("... (os error 28)") from safetensors
_FULL = ("no space left", "os error 28", "iostream error", "unexpected pos", "disk quota")


def disk_full(path: str | os.PathLike, exc: BaseException, min_free: int = 1 << 20) -> bool:
    """Whether `exc`, raised while writing under `path`, is the disk running full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return False
    return free < min_free and any(s in str(exc).lower() for s in _FULL)


def maybe_disk_full(path: str | os.PathLike, exc: BaseException, what: str, kept: str) -> None:
    """Raise `DiskFullError` naming `path` when `exc` is a full disk (else return: the caller re-raises)."""
    if disk_full(path, exc):
        free = shutil.disk_usage(path).free
        raise DiskFullError(
            errno.ENOSPC,
            f"disk full while writing {what} ({free:,} bytes free) — free some space, then {kept}",
            str(path),
        ) from exc


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_dir(path: str | os.PathLike, suffixes: tuple[str, ...] = (".safetensors", ".bin", ".gguf")) -> str:
    """Hash the weight files of a folder (names and contents, in sorted order)."""
    h = hashlib.sha256()
    for f in sorted(Path(path).rglob("*")):
        if f.is_file() and f.suffix in suffixes:
            h.update(f.relative_to(path).as_posix().encode())
            h.update(sha256_file(f).encode())
    return h.hexdigest()


def staging_dir(final_dir: str | os.PathLike) -> Path:
    """A fresh folder beside `final_dir` to write into before `replace_dir` moves it in place."""
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.", suffix=".tmp", dir=final_dir.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the usual folder mode
    return tmp
