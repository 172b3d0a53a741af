"""A tiny knowledge base (Markdown, text, HTML) and indexes built from it with the real MiniLM embedder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

PRODUCTS = """# Zephyr Appliances

Zephyr Appliances makes household machines.

## Zorblat blender

The Zorblat blender costs $149. It has a 1.8 liter jar and nine speeds.

## Quibble toaster

The Quibble toaster toasts four slices at once. Its crumb tray is dishwasher safe.

## Vantor fan

The Vantor fan runs at 31 dB on its lowest setting and oscillates 120 degrees.
"""

POLICIES = """Returns are accepted within 21 days of delivery.

Shipping is free on orders above $80; express delivery costs $12.
"""

HELP = """<html><head><style>p{color:red}</style></head><body>
<h1>Help centre</h1><h2>Opening hours</h2><p>Phone support is open weekdays from 8:15 to 17:30.</p>
<script>track()</script><h2>Warranty</h2><p>Every Zephyr appliance has a 30 month warranty.</p>
</body></html>"""


@pytest.fixture
def kb(tmp_path) -> Path:
    """docs/products.md, docs/policies.txt, docs/help.html under tmp_path (the index root)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "products.md").write_text(PRODUCTS)
    (docs / "policies.txt").write_text(POLICIES)
    (docs / "help.html").write_text(HELP)
    return tmp_path


@pytest.fixture(scope="session")
def kb_index_template(tmp_path_factory) -> Path:
    """An index of the tiny knowledge base, built once; tests copy it (`kb_index`)."""
    from tuneforge.rag.index import KnowledgeIndex

    root = tmp_path_factory.mktemp("kb")
    (root / "docs").mkdir()
    for name, text in (("products.md", PRODUCTS), ("policies.txt", POLICIES), ("help.html", HELP)):
        (root / "docs" / name).write_text(text)
    index = KnowledgeIndex.open(root / "index", create=True)
    index.update([root / "docs"], root=root)
    index.close()
    return root


@pytest.fixture
def kb_index(kb_index_template, tmp_path) -> Path:
    """A private copy of the prebuilt root (docs/ + index/)."""
    dst = tmp_path / "kbroot"
    shutil.copytree(kb_index_template, dst)
    return dst
