"""/v1/files against hostile uploads, over a real loopback socket: file names that try to leave the
files folder (`../`, absolute paths, backslashes, NUL, U+2215, full-width dots and slashes, bidi
overrides) are refused or reduced to a plain name, and nothing is written outside the folder; the
size limit holds, and an oversize upload is refused before the server has read all of it."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
from deploy.helpers import KEY

from .conftest import demo_rows

pytestmark = pytest.mark.timeout(90)
LIMIT = 64 << 10  # the jobs folder's max_file_bytes in these tests


def _multipart(filename: bytes, content: bytes, boundary: str = "tuneforgeboundary") -> tuple[bytes, str]:
    """A multipart/form-data body with the file name's bytes exactly as given (clients escape them)."""
    b = boundary.encode()
    body = (
        b"--" + b + b'\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'
        b"--" + b + b'\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + content + b"\r\n--" + b + b"--\r\n"
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _post(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("POST", "/v1/files", body, {"Authorization": f"Bearer {KEY}", "Content-Type": content_type})
        res = conn.getresponse()
        return res.status, json.loads(res.read() or b"{}")
    finally:
        conn.close()


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _jsonl(nbytes: int) -> bytes:
    """Valid JSON Lines of exactly `nbytes` bytes (the last row padded with spaces)."""
    row = json.dumps(demo_rows(1)[0]).encode()
    n = max(1, nbytes // (len(row) + 1))
    out = (row + b"\n") * (n - 1) + row
    assert len(out) < nbytes
    return out + b" " * (nbytes - len(out) - 1) + b"\n"


EVIL = f"evil-{uuid.uuid4().hex[:8]}"  # unique: a stray file from elsewhere cannot confuse the test
HOSTILE = [
    f"../../{EVIL}.jsonl",
    f"../../../../../../tmp/{EVIL}.jsonl",
    f"/tmp/{EVIL}.jsonl",
    f"..\\..\\{EVIL}.jsonl",
    f"C:\\{EVIL}.jsonl",
    f"..\u2215..\u2215{EVIL}.jsonl",  # DIVISION SLASH
    f"\uff0e\uff0e\uff0f\uff0e\uff0e\uff0f{EVIL}.jsonl",  # FULLWIDTH FULL STOP, FULLWIDTH SOLIDUS
    f"..\u2044{EVIL}.jsonl",  # FRACTION SLASH
    f"..%2F..%2F{EVIL}.jsonl",  # percent-encoding is not decoded: a literal name
    f"{EVIL}.jsonl\x00.png",
    f"{EVIL}\x00/../../{EVIL}.jsonl",
    f"\u202e{EVIL}.jsonl",  # RIGHT-TO-LEFT OVERRIDE
    "..",
    ".jsonl/..",
]


def test_hostile_file_names_never_leave_the_files_folder(jobs_server, jobs_cfg, tmp_path):
    url, client = jobs_server(worker=False)
    content = _jsonl(600)
    outside = [Path(f"/tmp/{EVIL}.jsonl"), Path(jobs_cfg.root).parent / f"{EVIL}.jsonl", tmp_path / f"{EVIL}.jsonl"]
    assert not any(p.exists() for p in outside)
    before = _tree(tmp_path)
    stored = []
    for name in HOSTILE:
        status, body = _post(url, *_multipart(name.encode("utf-8", "surrogatepass"), content))
        if status == 200:
            stored.append((name, body))
            listed = body["filename"]
            assert not ({"/", "\\", "\x00", "\u2215", "\u2044", "\uff0f"} & set(listed)), (name, listed)
            assert listed.strip(".") and listed.endswith(".jsonl"), (name, listed)
            assert client.files.content(body["id"]).read() == content
        else:
            assert status == 400 and body["error"]["param"] == "file", (name, status, body)
            assert body["error"]["code"] in ("invalid_file_name", "invalid_file_format"), (name, body)
    assert {n for n, _ in stored} >= {f"../../{EVIL}.jsonl", f"/tmp/{EVIL}.jsonl", f"..\u2215..\u2215{EVIL}.jsonl"}
    assert all(b["filename"] == f"{EVIL}.jsonl" for n, b in stored if "%2F" not in n)
    assert not any(p.exists() for p in outside)
    files = Path(jobs_cfg.files_dir).relative_to(tmp_path)
    new = _tree(tmp_path) - before
    assert {str(files / f"{b['id']}.jsonl") for _, b in stored} <= new
    assert all(Path(p).parent == files and Path(p).name.startswith("file-") for p in new if "jobs.db" not in p), new


def test_a_control_character_in_the_name_is_refused(jobs_server):
    url, _ = jobs_server(worker=False)
    for name in ("evil\x00.jsonl", "a\x1b[2J.jsonl", "train\u200b.jsonl"):  # NUL, an escape sequence, zero width
        status, body = _post(url, *_multipart(name.encode(), _jsonl(600)))
        assert status == 400 and body["error"]["code"] == "invalid_file_name", (repr(name), status, body)


def test_the_size_limit_holds_at_the_byte(jobs_server, jobs_cfg):
    url, client = jobs_server(worker=False, max_file_bytes=LIMIT)
    files = Path(jobs_cfg.files_dir)
    status, body = _post(url, *_multipart(b"exact.jsonl", _jsonl(LIMIT)))
    assert status == 200 and body["bytes"] == LIMIT, body
    before = sorted(os.listdir(files))
    status, body = _post(url, *_multipart(b"over.jsonl", _jsonl(LIMIT + 1)))
    assert status in (400, 413) and body["error"]["code"] in ("file_too_large", "request_too_large"), body
    assert str(LIMIT) in body["error"]["message"]
    assert sorted(os.listdir(files)) == before  # nothing kept, not even a temporary file
    assert [f.filename for f in client.files.list()] == ["exact.jsonl"]


def _raw(url: str, head: bytes) -> socket.socket:
    u = urlparse(url)
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    s.sendall(head)
    return s


def _response(s: socket.socket) -> bytes:
    out = b""
    while b"\r\n\r\n" not in out or not out.rstrip().endswith(b"}"):
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    return out


def test_an_oversize_upload_is_refused_before_it_is_read(jobs_server, jobs_cfg):
    from tuneforge.jobs.routes import MULTIPART_SLACK

    url, client = jobs_server(worker=False, max_file_bytes=LIMIT)
    _, ctype = _multipart(b"big.jsonl", b"")
    head = f"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: {ctype}\r\n"

    # a declared length over the limit: refused from the headers, the body is never sent
    s = _raw(url, (head + f"Content-Length: {100 * LIMIT}\r\n\r\n").encode())
    t0 = time.monotonic()
    res = _response(s)
    s.close()
    assert res.startswith(b"HTTP/1.1 413"), res[:200]
    assert time.monotonic() - t0 < 5  # answered at once, not after a read timeout

    # no length (chunked): refused once the bytes received pass the limit, while the client is still sending
    s = _raw(url, (head + "Transfer-Encoding: chunked\r\n\r\n").encode())
    body, _ = _multipart(b"big.jsonl", _jsonl(16 * LIMIT))
    sent, res = 0, b""
    s.settimeout(0.05)
    for i in range(0, len(body), 8 << 10):
        piece = body[i : i + (8 << 10)]
        try:
            s.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sent += len(piece)
            res += s.recv(65536)
        except (TimeoutError, BlockingIOError):
            continue
        except (BrokenPipeError, ConnectionResetError):
            break
        if res:
            break
    s.settimeout(10)
    if not res:
        res = _response(s)
    s.close()
    assert res.startswith((b"HTTP/1.1 413", b"HTTP/1.1 400")), res[:300]  # the body limit, or the upload's own
    assert sent < len(body)  # the final chunk was never sent: the server did not wait for it
    assert sent <= LIMIT + MULTIPART_SLACK + (64 << 10)  # and stopped reading soon after the limit
    files = Path(jobs_cfg.files_dir)
    assert not files.exists() or os.listdir(files) == []  # nothing stored, not even a temporary file
    assert list(client.files.list()) == []
