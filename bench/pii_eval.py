"""Precision/recall of tuneforge's PII detector per entity type on the project's labelled corpus.

.venv/bin/python bench/pii_eval.py [CORPUS] [--errors]
"""

from __future__ import annotations

import sys
from pathlib import Path

from tuneforge.data.pii_eval import read_corpus, render_table, score

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    paths = [a for a in argv if not a.startswith("--")]
    corpus = Path(paths[0]) if paths else ROOT / "tests" / "assets" / "pii" / "corpus.txt"
    result = score(read_corpus(corpus))
    print(render_table(result))
    if "--errors" in argv:
        for e in result["errors"]:
            print(f"{e['kind']:>15} {e['type']:<12} {e['text']!r:40} | {e['sentence']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
