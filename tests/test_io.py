"""Folders are swapped in crash-safely: one complete version always exists at the final path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tuneforge import io


def _version(tmp_path, text):
    d = io.staging_dir(tmp_path / "adapter")
    (d / "weights.txt").write_text(text)
    return d


def test_the_swap_is_one_atomic_exchange_on_linux(tmp_path, monkeypatch):
    io.replace_dir(_version(tmp_path, "v1"), tmp_path / "adapter")
    renames = []
    real = os.replace
    monkeypatch.setattr(io.os, "replace", lambda a, b: (renames.append((a, b)), real(a, b)))
    io.replace_dir(_version(tmp_path, "v2"), tmp_path / "adapter")
    if sys.platform != "linux":
        pytest.skip("renameat2(RENAME_EXCHANGE) is Linux-only; the fallback is tested below")
    assert renames == []  # no rename that leaves the final path empty
    assert (tmp_path / "adapter" / "weights.txt").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_a_crash_between_the_fallback_renames_keeps_the_old_version(tmp_path, monkeypatch):
    io.replace_dir(_version(tmp_path, "v1"), tmp_path / "adapter")
    monkeypatch.setattr(io, "_exchange", lambda a, b: False)  # a system without renameat2
    calls = []
    real = os.replace

    def crash_on_second(a, b):
        calls.append(b)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the renames")
        real(a, b)

    monkeypatch.setattr(io.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        io.replace_dir(_version(tmp_path, "v2"), tmp_path / "adapter")
    monkeypatch.setattr(io.os, "replace", real)
    assert not (tmp_path / "adapter").exists()  # the window the exchange closes
    io.recover_dir(tmp_path / "adapter")  # what the next replace_dir (or a reader) does first
    assert (tmp_path / "adapter" / "weights.txt").read_text() == "v1"


def test_sigkill_during_replacement_never_leaves_the_folder_missing(tmp_path):
    """A real process killed at random points while it swaps versions in a loop."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(io.__file__.rsplit("/tuneforge/", 1)[0])!r})
        from pathlib import Path
        from tuneforge import io
        root = Path({str(tmp_path)!r})
        i = 0
        while True:
            d = io.staging_dir(root / "adapter")
            (d / "weights.txt").write_text(str(i % 10) * 1000)
            io.replace_dir(d, root / "adapter")
            i += 1
            if i == 3:
                print("ready", flush=True)
        """
    )
    import random
    import signal
    import time

    rng = random.Random(0)
    for _ in range(10):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        io.recover_dir(tmp_path / "adapter")
        text = (tmp_path / "adapter" / "weights.txt").read_text()
        assert len(text) == 1000 and len(set(text)) == 1  # one whole version, never a mix or nothing
